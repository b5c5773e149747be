"""Operator range specs (``metadip pretrain --images ... --operator denoise:sigma=10..40``) mapped onto the fields of
a :class:`metadip.tasks.TaskDistribution`."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from metadip.errors import MetadipError
from metadip.operators import parse_operator_spec
from metadip.tasks import TaskDistribution

#: What a ``--operator`` spec of ``metadip pretrain --images`` may set, per family: spec key → field of
#: :class:`TaskDistribution`. ``sigma`` of every family but denoise is the one shared ``noise_sigma``.
SPEC_FIELDS: dict[str, dict[str, str]] = {
    "denoise": {"sigma": "denoise_sigma"},
    "inpaint": {"ratio": "inpaint_ratio", "holes": "inpaint_holes", "block": "inpaint_block", "sigma": "noise_sigma"},
    "superres": {"factor": "superres_factors", "filter": "superres_filters", "sigma": "noise_sigma"},
    "deblur": {"kernel": "deblur_kernels", "width": "deblur_width", "length": "deblur_length", "sigma": "noise_sigma"},
    "fourier": {"ratio": "fourier_ratio", "pattern": "fourier_pattern", "sigma": "noise_sigma"},
}
_CHOICES = {  # list fields: alternatives a|b (integers also as a range lo..hi); the words a task can draw
    "inpaint_holes": ("pixels", "blocks"),
    "superres_factors": None,
    "superres_filters": ("box", "gauss"),
    "deblur_kernels": ("gauss", "motion"),
}
_SINGLE = {"inpaint_block": None}  # one value, no range
_JOINED = {"fourier_pattern": ("lines", "points")}  # alternatives a|b kept as one string
_SELECTORS = {"block": "holes=blocks", "width": "kernel=gauss", "length": "kernel=motion"}  # for the value check


def distribution_for_operators(base: TaskDistribution, specs: Sequence[str]) -> TaskDistribution:
    """``base`` with the operator families and parameter ranges of ``specs`` (``metadip pretrain --images
    --operator ...``): the listed families at equal weight (the others never drawn), and each key given mapped
    onto its field (:data:`SPEC_FIELDS`) — a range ``lo..hi`` (``denoise:sigma=10..40``,
    ``fourier:ratio=0.2..0.4``), a single value (a degenerate range), alternatives ``a|b`` for list fields
    (``inpaint:holes=pixels|blocks``, ``superres:factor=2|4`` or ``2..4``). Keys not given keep ``base``'s
    values. Each value is checked by the operator spec parser; a key the distribution has no field for
    (``poisson``, ``center``, ``angle``), a ``file`` choice, or two different ``sigma`` ranges for the shared
    ``noise_sigma`` is a one-line error naming it."""
    if not specs:
        raise MetadipError("give at least one operator spec, e.g. --operator denoise:sigma=10..40")
    weights: dict[str, float] = {}
    fields: dict[str, Any] = {}
    shared: dict[str, str] = {}  # field -> the spec that set it (noise_sigma is shared by four families)
    for text in specs:
        name, colon, rest = str(text).strip().partition(":")
        family = name.strip().lower()
        parse_operator_spec(family)  # an unknown family: the parser's own error
        if family in weights:
            raise MetadipError(f"--operator {text!r}: family {family} is given twice; give it once, with ranges")
        weights[family] = 1.0
        seen: set[str] = set()
        for item in rest.split(",") if colon else ():
            key, equals, value = (part.strip() for part in item.partition("="))
            key = key.lower()
            if not equals or not key or not value:
                raise MetadipError(f"--operator {text!r}: expected key=value, got {item.strip()!r}")
            if key in seen:
                raise MetadipError(f"--operator {text!r}: key {key!r} is given twice")
            seen.add(key)
            table = SPEC_FIELDS[family]
            if key not in table:
                raise MetadipError(
                    f"--operator {text!r}: the task distribution has no range for {key!r}; a {family} task draws "
                    f"{', '.join(table)}"
                )
            field_name = table[key]
            parsed = _spec_value(family, key, value, field_name, text, parse_operator_spec)
            if field_name in fields and fields[field_name] != parsed:
                raise MetadipError(
                    f"--operator {text!r}: {key} sets tasks.{field_name}, which {shared[field_name]!r} already set "
                    "differently (one noise range serves every family but denoise); give the same range"
                )
            fields[field_name], shared[field_name] = parsed, str(text)
    return dataclasses.replace(base, weights=weights, **fields)


def _spec_value(family: str, key: str, value: str, field_name: str, text: str, parse) -> Any:
    """One ``key=value`` of a range spec as the value of field ``field_name`` (each part checked by ``parse``)."""

    def check(part: str) -> Any:
        selector = _SELECTORS.get(key)
        spec = f"{family}:{selector + ',' if selector else ''}{key}={part}"
        try:
            return parse(spec).params[key]
        except MetadipError as exc:
            raise MetadipError(f"--operator {text!r}: {exc}") from None

    if field_name in _JOINED:
        if ".." in value:
            raise MetadipError(f"--operator {text!r}: {key} takes one value or alternatives a|b, got {value!r}")
        parts = [check(p.strip()) for p in value.split("|")]
        bad = [p for p in parts if p not in _JOINED[field_name]]
        if bad:
            raise MetadipError(f"--operator {text!r}: {key}={bad[0]} cannot be drawn; choose from lines, points")
        return "|".join(dict.fromkeys(parts))
    if field_name in _SINGLE or field_name in _CHOICES:
        allowed = _SINGLE.get(field_name) or _CHOICES.get(field_name)
        if field_name in _SINGLE and ("|" in value or ".." in value):
            raise MetadipError(f"--operator {text!r}: {key} takes one value (tasks.{field_name}), got {value!r}")
        if ".." in value and field_name == "superres_factors":
            lo, hi = (check(p) for p in value.split("..", 1))
            if lo > hi:
                raise MetadipError(f"--operator {text!r}: {key} range {value!r} has low > high")
            parts = list(range(lo, hi + 1))
        else:
            parts = [check(p.strip()) for p in value.split("|")]
        for part in parts:
            if allowed is not None and part not in allowed:
                raise MetadipError(
                    f"--operator {text!r}: {key}={part} cannot be drawn at random; choose from {', '.join(allowed)}"
                )
        if field_name in _SINGLE:
            return parts[0]
        return tuple(dict.fromkeys(parts))
    if "|" in value:
        raise MetadipError(f"--operator {text!r}: {key} takes a range lo..hi or one value, got {value!r}")
    ends = value.split("..", 1) if ".." in value else [value, value]
    lo, hi = (check(p.strip()) for p in ends)
    if lo > hi:
        raise MetadipError(f"--operator {text!r}: {key} range {value!r} has low > high")
    return (lo, hi)
