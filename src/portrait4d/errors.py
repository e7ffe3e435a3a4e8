"""The one exception type that reaches users as a single clear line.

Library code raises :class:`UserInputError` for problems the user can fix (a missing
file, a bad argument, a wrong checkpoint); the command line prints its message and exits
non-zero instead of showing a traceback.
"""


class UserInputError(Exception):
    """A problem with the user's input or environment, explained in one line."""


WORKER_TRACEBACK_MARK = "\nOriginal Traceback"
"""What torch's DataLoader puts between "Caught X in DataLoader worker N." and the worker's
traceback when it re-raises a worker's exception in the main process."""


def describe_user_error(error: UserInputError) -> str:
    """The one line of a :class:`UserInputError`, also when it was raised in a DataLoader worker
    (then torch re-raises it with the worker's traceback text: only the original message is kept)."""
    text = str(error)
    if WORKER_TRACEBACK_MARK in text:
        last = text.rstrip().splitlines()[-1]
        text = last.split(": ", 1)[1] if ": " in last else last
    return " ".join(text.split())


def describe_os_error(error: OSError) -> str:
    """One line for an operating-system error: the path(s) it names and the system's reason.

    ``PermissionError(13, 'Permission denied', 'out/a.png')`` -> ``"out/a.png: Permission denied"``.
    """
    reason = error.strerror or str(error) or type(error).__name__
    paths = [str(name) for name in (error.filename, error.filename2) if name is not None]
    line = f"{' -> '.join(paths)}: {reason}" if paths else reason
    return " ".join(line.split())  # one line, whatever the message held
