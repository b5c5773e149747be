"""Compatibility: the report moved to :mod:`metadip.evaluation.report` (figures, ``report.md``)."""

from metadip.evaluation.report import *  # noqa: F403
from metadip.evaluation.report import __all__  # noqa: F401
