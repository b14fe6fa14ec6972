"""The one exception type that the command line turns into a clean one-line error.

Raise `QuirkyError` for anything a user can fix (bad input, missing file, mismatched store): the CLI prints
its message and exits with status 2 instead of showing a traceback from deep inside torch or pandas.
"""


class QuirkyError(Exception):
    """A user-facing error whose message says what is wrong and how to fix it."""
