"""The one exception type that reaches users as a single clear line.

Library code raises :class:`UserInputError` for problems the user can fix (a missing
file, a bad argument, a wrong checkpoint); the command line prints its message and exits
non-zero instead of showing a traceback.
"""


class UserInputError(Exception):
    """A problem with the user's input or environment, explained in one line."""


def describe_os_error(error: OSError) -> str:
    """One line for an operating-system error: the path(s) it names and the system's reason.

    ``PermissionError(13, 'Permission denied', 'out/a.png')`` -> ``"out/a.png: Permission denied"``.
    """
    reason = error.strerror or str(error) or type(error).__name__
    paths = [str(name) for name in (error.filename, error.filename2) if name is not None]
    line = f"{' -> '.join(paths)}: {reason}" if paths else reason
    return " ".join(line.split())  # one line, whatever the message held
