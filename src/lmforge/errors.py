"""The one exception type for mistakes a user can make (bad path, empty corpus, ...).

The CLI prints its message as a single line and exits with status 2; anything else is a
bug and keeps its traceback.
"""


class UserError(Exception):
    """A problem with the user's input, described in one sentence that says what to do."""


class NonFiniteLossError(UserError):
    """Training produced a NaN or infinite loss; raised before that step changes any weight."""
