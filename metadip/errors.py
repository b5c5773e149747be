"""User-facing errors.

Every problem caused by the user's input (a bad file, an unknown operator, an out-of-range value) is raised as
:class:`MetadipError`. The CLI turns it into one line on stderr and exit code 2; Python callers can catch it.
"""

from __future__ import annotations


class MetadipError(ValueError):
    """A problem with the user's input, reported as one line without a traceback."""


def one_line(text: str) -> str:
    """``text`` (an error message) as one line: its non-blank lines, stripped, joined by ``"; "``."""
    lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
    return "; ".join(lines) if lines else "unknown error"
