"""Spec strings ``NAME[:key=value,...]`` ⇄ operators: the one parser (:func:`parse_operator_spec`), the key
checks, :func:`build_operator` and the ``--help`` listing (:func:`describe_operators`)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from metadip.errors import MetadipError
from metadip.operators.base import LinearOperator, _format, _Key
from metadip.operators.families import OPERATORS


@dataclass(frozen=True)
class OperatorSpec:
    """A parsed ``NAME[:key=value,...]`` spec: the family name and the keys given explicitly (typed)."""

    name: str
    params: dict


def describe_operators() -> str:
    """Human-readable list of operator families, their keys and defaults (for ``--help``)."""
    lines = ["Operators (NAME[:key=value,...]):"]
    for name, cls in OPERATORS.items():
        summary = (cls.__doc__ or "").strip().splitlines()[0].replace("``", "")
        lines.append(f"  {name}: {summary}")
        for key, spec in cls.keys().items():
            kind = "|".join(spec.kind) if isinstance(spec.kind, tuple) else spec.kind.__name__
            default = "none" if spec.default is None else _format(spec.default)
            when = f"; only with {spec.when[0]}={'|'.join(spec.when[1])}" if spec.when else ""
            lines.append(f"    {key}={kind} (default {default}){when}: {spec.help}")
    return "\n".join(lines)


def _family(name: str) -> type[LinearOperator]:
    cls = OPERATORS.get(name)
    if cls is None:
        raise MetadipError(f"unknown operator {name!r}; valid: {', '.join(OPERATORS)}")
    return cls


def _convert(name: str, key: str, spec: _Key, value: Any) -> Any:
    if isinstance(spec.kind, tuple):
        word = str(value).strip().lower()
        if word not in spec.kind:
            raise MetadipError(f"{name}: {key} must be one of {', '.join(spec.kind)} (got {value!r})")
        return word
    try:
        if isinstance(value, bool):
            raise ValueError
        number = float(value)
        if spec.kind is int:
            if not number.is_integer():
                raise ValueError
            number = int(number)
    except (TypeError, ValueError):
        raise MetadipError(f"{name}: {key} must be {spec.rule.text} (got {value!r})") from None
    if not math.isfinite(number) or not spec.rule.ok(number):
        raise MetadipError(f"{name}: {key} must be {spec.rule.text} (got {value!r})")
    return number


def _validate(name: str, params: Mapping[str, Any]) -> dict:
    """Type-convert and range-check explicit keys; keys absent or None are left to their defaults."""
    keys = _family(name).keys()
    out = {}
    for key, value in params.items():
        if key not in keys:
            raise MetadipError(f"unknown key {key!r} for operator {name}; valid: {', '.join(keys)}")
        if value is not None:
            out[key] = _convert(name, key, keys[key], value)
    for key in out:
        if keys[key].when:
            selector, allowed = keys[key].when
            if out.get(selector, keys[selector].default) not in allowed:
                raise MetadipError(f"{name}: key {key} applies only with {selector}={'|'.join(allowed)}")
    return out


def parse_operator_spec(text: str) -> OperatorSpec:
    """Parse ``NAME[:key=value,...]`` (e.g. ``deblur:kernel=motion,length=9,sigma=5``); values are checked."""
    if not isinstance(text, str) or not text.strip():
        raise MetadipError(
            f"empty operator spec; expected NAME[:key=value,...] with NAME one of {', '.join(OPERATORS)}"
        )
    name, colon, rest = text.strip().partition(":")
    name = name.strip().lower()
    _family(name)
    params: dict[str, str] = {}
    for item in rest.split(",") if colon else ():
        key, equals, value = (part.strip() for part in item.partition("="))
        if not equals or not key or not value:
            raise MetadipError(f"malformed operator spec {text!r}: expected key=value, got {item.strip()!r}")
        if key.lower() in params:
            raise MetadipError(f"malformed operator spec {text!r}: key {key!r} given twice")
        params[key.lower()] = value
    return OperatorSpec(name, _validate(name, params))


def _image_shape(shape: Any) -> tuple[int, int, int]:
    try:
        dims = tuple(int(d) for d in shape)[-3:]
    except (TypeError, ValueError):
        dims = ()
    if len(dims) != 3 or min(dims) < 1:
        raise MetadipError(f"image shape must be (C, H, W) with positive sizes, got {shape!r}")
    return dims


def build_operator(
    spec: str | OperatorSpec,
    image_shape: tuple[int, ...],
    *,
    generator: torch.Generator | None = None,
    mask: torch.Tensor | np.ndarray | None = None,
    kernel: torch.Tensor | np.ndarray | None = None,
    device: str | torch.device = "cpu",
) -> LinearOperator:
    """Build the operator for ``image_shape`` (C, H, W) or (B, C, H, W).

    Random parameters are drawn from ``generator`` (same seed → identical operator). ``mask`` (inpaint,
    fourier) or ``kernel`` (deblur) supplies the array instead of drawing/generating it; without an explicit
    ``holes``/``pattern``/``kernel`` key the spec then records ``file``.
    """
    parsed = parse_operator_spec(spec) if isinstance(spec, str) else spec
    if not isinstance(parsed, OperatorSpec):
        raise TypeError(f"spec must be a string or OperatorSpec, got {type(spec).__name__}")
    cls = _family(parsed.name)
    params = dict(parsed.params)
    arrays = {"mask": mask, "kernel": kernel}
    for what, array in arrays.items():
        if array is not None and cls.ARRAY != what:
            raise MetadipError(f"operator {cls.name} takes no {what} file (those that do: {_takers(what)})")
    array = arrays.get(cls.ARRAY)
    implied = array is not None and cls.SOURCE not in params
    if array is not None:
        params.setdefault(cls.SOURCE, "file")
    try:
        params = _validate(cls.name, params)
    except MetadipError as exc:
        if not implied:
            raise
        raise MetadipError(f"{exc} (a {cls.ARRAY} file means {cls.SOURCE}=file)") from None
    keys = cls.keys()
    resolved = {key: params.get(key, k.default) for key, k in keys.items() if _applies(keys, key, params)}
    if cls.SOURCE and resolved[cls.SOURCE] == "file" and array is None:
        raise MetadipError(f"{cls.name}:{cls.SOURCE}=file needs a {cls.ARRAY} file (--{cls.ARRAY})")
    extra = {"array": array} if cls.ARRAY else {}
    return cls(_image_shape(image_shape), generator=generator, **extra, **resolved).to(device)


def _applies(keys: dict[str, _Key], key: str, params: dict) -> bool:
    if keys[key].when is None:
        return True
    selector, allowed = keys[key].when
    return params.get(selector, keys[selector].default) in allowed


def _takers(what: str) -> str:
    return ", ".join(name for name, cls in OPERATORS.items() if cls.ARRAY == what)
