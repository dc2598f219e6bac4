"""The one exception type for mistakes a user can make (bad path, empty corpus, ...).

The CLI prints its message as a single line and exits with status 2; anything else is a
bug and keeps its traceback. A problem that does not stop the command is a
:class:`UserInputWarning`, printed as a single line too.
"""

import difflib
from collections.abc import Iterable


def did_you_mean(bad: str, known: Iterable[str], otherwise: str | None = None) -> str:
    """``did you mean 'x'?`` for the nearest of ``known`` to a mistyped ``bad``; else
    ``otherwise``, by default the list of them (``it takes a, b.``).

    Args:
        bad: What the user typed.
        known: The valid names.
        otherwise: The hint when nothing is near.
    """
    known = list(known)
    near = difflib.get_close_matches(bad, known, n=1, cutoff=0.6)
    return f"did you mean '{near[0]}'?" if near else otherwise or f"it takes {', '.join(known)}."


class UserError(Exception):
    """A problem with the user's input, described in one sentence that says what to do."""


class UserInputWarning(UserWarning):
    """Something about the user's input worth knowing that does not stop the command (a
    tokenizer smaller than asked for, ...), in one sentence that says what to do. The CLI
    prints it as one line, ``lmforge: warning: ...``."""


class NonFiniteLossError(UserError):
    """Training produced a NaN or infinite loss; raised before that step changes any weight."""
