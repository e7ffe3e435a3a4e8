"""The one exception type that reaches users as a single clear line.

Library code raises :class:`UserInputError` for problems the user can fix (a missing
file, a bad argument, a wrong checkpoint); the command line prints its message and exits
non-zero instead of showing a traceback.
"""


class UserInputError(Exception):
    """A problem with the user's input or environment, explained in one line."""
