"""The one exception type for mistakes a user can fix, and the wrapper that reports it."""

import functools
import sys


class UserError(Exception):
    """A problem with the user's input: reported as one sentence, never a traceback."""


def report_user_errors(main):
    """Wraps an absl `main` so a `UserError` ends the program with its message and exit code 2."""

    @functools.wraps(main)
    def wrapped(argv):
        try:
            return main(argv)
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            sys.exit(130)

    return wrapped
