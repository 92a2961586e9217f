"""The one exception type for mistakes a user can fix, the wrapper that reports it, and the
check an output folder passes before any work is done."""

import functools
import os
import pathlib
import sys


class UserError(Exception):
    """A problem with the user's input: reported as one sentence, never a traceback."""


def report_user_errors(main):
    """Wraps an absl `main` so a `UserError` ends the program with its message and exit code 2.

    So does an `OSError` (a folder that cannot be made, a full disk, a file that vanished): the
    machine's answer, with the path it concerns, is the sentence."""

    @functools.wraps(main)
    def wrapped(argv):
        try:
            return main(argv)
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
        except OSError as e:
            where = f"{e.filename}: " if e.filename else ""
            print(f"error: {where}{e.strerror or e}.", file=sys.stderr)
            sys.exit(2)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            sys.exit(130)

    return wrapped


def parse_flags(argv):
    """absl's flag parsing, a bad flag or value ending the program in one sentence and exit code
    2 (absl itself prints two lines and a hint, exit 1)."""
    from absl import flags

    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        print(f"error: {e}; see --help.", file=sys.stderr)
        sys.exit(2)


def check_writable_folder(path, flag: str) -> pathlib.Path:
    """`path` as a folder that exists or can be created, and can be written: else one sentence.

    Creates nothing, so a program can call it before any work. A file in the way, a missing
    permission or a read-only file system is refused here; what `os.access` cannot foresee
    (root on a special file system) still fails at the first write, which callers turn into
    a UserError too.
    """
    if path is None or not str(path):
        raise UserError(f"{flag} is empty; name a folder, or leave it out for the default.")
    path = pathlib.Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{flag}={path} is a file, not a folder.")
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"{flag}={path} cannot be created: {existing} is a file.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"{flag}={path} cannot be written: {existing} is read-only (permission "
                        "denied or a read-only file system).")
    return path
