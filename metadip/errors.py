"""User-facing errors.

Every problem caused by the user's input (a bad file, an unknown operator, an out-of-range value) is raised as
:class:`MetadipError`. The CLI turns it into one line on stderr and exit code 2; Python callers can catch it.
"""

from __future__ import annotations


class MetadipError(ValueError):
    """A problem with the user's input, reported as one line without a traceback."""
