"""The one exception type for mistakes a user can make (bad path, empty corpus, ...).

The CLI prints its message as a single line and exits with status 2; anything else is a
bug and keeps its traceback. A problem that does not stop the command is a
:class:`UserInputWarning`, printed as a single line too.
"""


class UserError(Exception):
    """A problem with the user's input, described in one sentence that says what to do."""


class UserInputWarning(UserWarning):
    """Something about the user's input worth knowing that does not stop the command (a
    tokenizer smaller than asked for, ...), in one sentence that says what to do. The CLI
    prints it as one line, ``lmforge: warning: ...``."""


class NonFiniteLossError(UserError):
    """Training produced a NaN or infinite loss; raised before that step changes any weight."""
