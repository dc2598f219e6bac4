"""The ``lmforge`` console script: looks the subcommand up in :data:`lmforge.commands.COMMANDS`
and runs it; a user's mistake ends as one ``lmforge: error: ...`` line and exit status 2."""

from __future__ import annotations

import sys

from lmforge.commands import COMMANDS, usage
from lmforge.errors import did_you_mean


def main(args: list[str] | None = None) -> None:
    """Entry point of the ``lmforge`` console script.

    Args:
        args: The arguments (``sys.argv[1:]`` when None), the command's name first.
    """
    argv = sys.argv[1:] if args is None else list(args)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())  # at once: nothing of torch or Lightning is imported for it
        return
    command = COMMANDS.get(argv[0])
    if command is None:
        hint = did_you_mean(argv[0], COMMANDS, f"the commands are {', '.join(COMMANDS)}.")
        print(f"lmforge: error: unknown command '{argv[0]}': {hint}", file=sys.stderr)
        sys.exit(2)
    from lmforge.commands.messages import find_user_error, one_line_warnings, quiet_lightning

    quiet_lightning()
    with one_line_warnings():
        try:
            command.run(argv[1:])
        except Exception as err:
            user_error = find_user_error(err)
            if user_error is None:
                raise
            print(f"lmforge: error: {user_error}", file=sys.stderr)
            sys.exit(2)
