"""One base class for user-facing errors.

Anything raised as a :class:`GraceError` is reported by the CLI as one line (no traceback) and
exit code 2. Its message must name the file, tensor or field at fault.
"""


class GraceError(Exception):
    """A user-facing error: bad input, missing file, inconsistent checkpoint."""
