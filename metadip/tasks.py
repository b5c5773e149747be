"""Meta-training tasks: a clean crop x, an operator A with randomly drawn parameters, noise σ, and y = A x +
n.

:class:`TaskDistribution` is the (frozen, TOML round-tripping) description of which operator families are
drawn, with which weights and parameter ranges, at which crop sizes and with which augmentations.
Reproducibility: task ``k`` of a run with seed ``s`` is drawn from its **own** generator seeded with
``derive_seed(s, "task", k)`` (a SHA-256 of the parts), so a task never depends on how many numbers earlier
tasks drew, tasks can be split over processes in any way, and a resumed run draws exactly the tasks an
uninterrupted one would. Inside a task the draws happen in a fixed order: (only when ``dead_leaves`` > 0: whether
the image is a procedural dead-leaves picture), image, crop size, crop and augmentation (or the dead-leaves
picture), family, family parameters, noise σ, the operator's own random parts (mask, motion angle), then the
measurement noise.

This module also holds the small config helpers the pretraining config uses (``config_from_dict`` checks
keys and types of a frozen dataclass, ``to_toml_text`` writes one).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import torch

from metadip.errors import MetadipError
from metadip.images import DEAD_LEAVES, DeadLeaves, random_patch
from metadip.operators import OperatorSpec, build_operator, simulate
from metadip.phantoms import Phantoms

FAMILIES = ("denoise", "inpaint", "superres", "deblur", "fourier")


# ------------------------------------------------------------------------------------------------------------
# seeds


def derive_seed(*parts: Any) -> int:
    """A 63-bit seed from any tuple of ints/strings (SHA-256 of their text): independent streams per
    purpose."""
    text = "\x1f".join(str(p) for p in parts)
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little") & ((1 << 63) - 1)


def make_generator(*parts: Any) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with ``derive_seed(*parts)``."""
    generator = torch.Generator(device="cpu")
    generator.manual_seed(derive_seed(*parts))
    return generator


# ------------------------------------------------------------------------------------------------------------
# config helpers: frozen dataclass <-> plain dict <-> TOML


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        problems = []
        for option in options:
            try:
                return _coerce(value, option, where)
            except MetadipError as exc:
                problems.append(str(exc))
        raise MetadipError(
            problems[0]
            if len(problems) == 1
            else f"{where}: {value!r} is not one of {' | '.join(_type_name(o) for o in options)}"
        )
    if origin is Literal:
        if value not in args:
            raise MetadipError(f"{where}: {value!r} is not one of {', '.join(repr(a) for a in args)}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise MetadipError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise MetadipError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise MetadipError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise MetadipError(f"{where}: expected a string, got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise MetadipError(f"{where}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise MetadipError(f"{where}: expected a list of {len(args)} values, got {list(value)!r}")
        return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True)))
    if origin in (dict, Mapping) or tp is dict:
        if not isinstance(value, Mapping):
            raise MetadipError(f"{where}: expected a table, got {value!r}")
        key_tp, val_tp = args if args else (str, Any)
        return {_coerce(k, key_tp, where): _coerce(v, val_tp, f"{where}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return config_from_dict(tp, value, where)
    raise TypeError(f"unsupported config field type {tp!r} at {where}")  # a programming error, not user input


def config_from_dict(cls: type, data: Any, where: str = "") -> Any:
    """Build the frozen dataclass ``cls`` from ``data``: unknown keys and wrong types raise MetadipError
    naming the key; missing keys take their defaults."""
    label = where or cls.__name__
    if dataclasses.is_dataclass(data) and isinstance(data, cls):
        return data
    if not isinstance(data, Mapping):
        raise MetadipError(f"{label}: expected a table, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise MetadipError(f"{label}: unknown key(s) {', '.join(unknown)}; valid: {', '.join(names)}")
    kwargs = {k: _coerce(v, hints[k], f"{label}.{k}" if where else k) for k, v in data.items()}
    return cls(**kwargs)


def config_to_dict(obj: Any) -> Any:
    """A frozen dataclass (nested) as plain dicts/lists (tuples become lists; ``None`` values are kept)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: config_to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): config_to_dict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [config_to_dict(v) for v in obj]
    return obj


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value if v is not None) + "]"
    if isinstance(value, Mapping):
        items = [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items() if v is not None]
        return "{ " + ", ".join(items) + " }" if items else "{}"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def _toml_key(key: str) -> str:
    bare = key and all(c.isalnum() or c in "-_" for c in key)
    return key if bare else json.dumps(key)


def to_toml_text(data: Mapping[str, Any], header: str = "") -> str:
    """Write a plain nested dict as TOML: scalars first, then one ``[table]`` per nested dict (dicts inside
    tables are written inline). ``None`` values are left out (TOML has no null; readers use the default)."""
    lines = [f"# {line}" for line in header.splitlines()] if header else []

    def emit(prefix: str, table: Mapping[str, Any]) -> None:
        scalars = [(k, v) for k, v in table.items() if not isinstance(v, Mapping) and v is not None]
        tables = [(k, v) for k, v in table.items() if isinstance(v, Mapping)]
        if prefix:
            lines.append("")
            lines.append(f"[{prefix}]")
        for key, value in scalars:
            lines.append(f"{_toml_key(key)} = {_toml_value(value)}")
        for key, value in tables:
            if prefix:  # nested dicts inside a table: inline, so the file stays two levels deep
                lines.append(f"{_toml_key(key)} = {_toml_value(value)}")
            else:
                emit(_toml_key(key), value)

    emit("", data)
    return "\n".join(lines).lstrip("\n") + "\n"


def _tomllib():
    try:
        import tomllib
    except ModuleNotFoundError:  # pragma: no cover - Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    return tomllib


def read_toml(path: Any) -> dict:
    """Parse a TOML file; a missing file or a syntax error is a MetadipError."""
    tomllib = _tomllib()

    path = Path(path)
    if not path.is_file():
        raise MetadipError(f"config file not found: {path}")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise MetadipError(f"{path} is not valid TOML: {exc}") from None


# ------------------------------------------------------------------------------------------------------------
# tasks


@dataclass
class Task:
    """One meta-training task. ``x``: clean 1×C×H×W crop; ``y``: its measurement; ``op``: the operator;
    ``sigma``: noise std (0–255); ``seed``: the task's own seed (inner-loop randomness derives from it);
    ``image``: the name of the source image; ``spec``: the operator's canonical spec string."""

    x: torch.Tensor
    y: torch.Tensor
    op: Any
    sigma: float
    seed: int
    image: str = ""
    spec: str = ""

    @property
    def family(self) -> str:
        return self.spec.split(":", 1)[0] if self.spec else getattr(self.op, "name", "")

    @property
    def size(self) -> tuple[int, int]:
        return (int(self.x.shape[-2]), int(self.x.shape[-1]))

    def to(self, device: str | torch.device) -> Task:
        return Task(
            self.x.to(device),
            self.y.to(device),
            self.op.to(device),
            self.sigma,
            self.seed,
            self.image,
            self.spec,
        )


def _default_weights() -> dict[str, float]:
    return {"denoise": 1.0, "inpaint": 1.0, "superres": 1.0, "deblur": 1.0}


@dataclass(frozen=True)
class TaskDistribution:
    """Which tasks meta-training sees. Ranges are ``[low, high]`` (uniform), σ on the 0–255 scale.

    ``weights``: operator family → relative weight (families absent or at 0 are never drawn).
    ``denoise_sigma``: noise of denoising tasks. ``noise_sigma``: noise added to the other families'
    measurements. ``inpaint_ratio``: fraction of pixels MISSING; ``inpaint_holes``: ``pixels`` and/or
    ``blocks`` (``block`` px). ``superres_factors`` / ``superres_filters``: choices. ``deblur_kernels``:
    ``gauss`` (std ``deblur_width``) and/or ``motion`` (length ``deblur_length``). ``fourier_ratio``: fraction
    of k-space sampled (``fourier_pattern``: ``lines``, ``points`` or ``lines|points``, one drawn per task).
    ``sizes``: crop sizes (one drawn per task). ``crop_scale``:
    window side / crop size, log-uniform, clamped to the image. ``min_std``: near-flat crops are redrawn.
    ``channels``: 3 (RGB), 1 (grey) or 2 (a complex picture as real and imaginary channels, drawn only by the
    ``phantoms-complex`` source: :mod:`metadip.phantoms`). ``dead_leaves``: fraction of training tasks whose
    clean image is a fresh procedural dead-leaves picture (:func:`metadip.images.dead_leaves`, rendered at the
    crop size) instead of a crop of the data source; validation tasks (stream ``"val"``) always use the
    source's held-out pictures."""

    weights: dict[str, float] = field(default_factory=_default_weights)
    denoise_sigma: tuple[float, float] = (5.0, 50.0)
    noise_sigma: tuple[float, float] = (0.0, 5.0)
    inpaint_ratio: tuple[float, float] = (0.3, 0.8)
    inpaint_holes: tuple[str, ...] = ("pixels",)
    inpaint_block: int = 8
    superres_factors: tuple[int, ...] = (2, 4)
    superres_filters: tuple[str, ...] = ("box",)
    deblur_kernels: tuple[str, ...] = ("gauss",)
    deblur_width: tuple[float, float] = (1.0, 3.0)
    deblur_length: tuple[int, int] = (5, 15)
    fourier_ratio: tuple[float, float] = (0.2, 0.5)
    fourier_pattern: str = "lines"
    sizes: tuple[int, ...] = (64,)
    channels: int = 3
    crop_scale: tuple[float, float] = (1.0, 4.0)
    flips: bool = True
    rotations: bool = True
    min_std: float = 0.02
    dead_leaves: float = 0.0

    @property
    def fourier_patterns(self) -> tuple[str, ...]:
        """The k-space patterns a fourier task draws from (``fourier_pattern`` may list alternatives a|b)."""
        return tuple(p.strip() for p in str(self.fourier_pattern).split("|"))

    def __post_init__(self) -> None:
        unknown = sorted(set(self.weights) - set(FAMILIES))
        if unknown:
            raise MetadipError(
                f"tasks.weights: unknown operator famil{'ies' if len(unknown) > 1 else 'y'} "
                f"{', '.join(unknown)}; valid: {', '.join(FAMILIES)}"
            )
        if any(w < 0 for w in self.weights.values()) or sum(self.weights.values()) <= 0:
            raise MetadipError("tasks.weights: weights must be >= 0 with at least one positive")
        for name in (
            "denoise_sigma",
            "noise_sigma",
            "inpaint_ratio",
            "deblur_width",
            "deblur_length",
            "fourier_ratio",
            "crop_scale",
        ):
            lo, hi = getattr(self, name)
            if not lo <= hi:
                raise MetadipError(f"tasks.{name}: low {lo} is greater than high {hi}")
        if min(self.denoise_sigma + self.noise_sigma) < 0:
            raise MetadipError("tasks: noise sigma must be >= 0")
        for name in ("inpaint_ratio", "fourier_ratio"):
            lo, hi = getattr(self, name)
            if not (0 < lo and hi < 1):
                raise MetadipError(f"tasks.{name}: must lie in (0, 1), got [{lo}, {hi}]")
        choices = {
            "inpaint_holes": ("pixels", "blocks"),
            "superres_filters": ("box", "gauss"),
            "deblur_kernels": ("gauss", "motion"),
        }
        for name, allowed in choices.items():
            values = getattr(self, name)
            bad = [v for v in values if v not in allowed]
            if not values or bad:
                raise MetadipError(
                    f"tasks.{name}: {list(values)} must be a non-empty list of {', '.join(allowed)}"
                )
        patterns = self.fourier_patterns
        if not patterns or any(p not in ("lines", "points") for p in patterns) or len(set(patterns)) != len(patterns):
            raise MetadipError(
                f"tasks.fourier_pattern: {self.fourier_pattern!r} is not lines, points or lines|points"
            )
        if not self.superres_factors or min(self.superres_factors) < 2:
            raise MetadipError("tasks.superres_factors: factors must be integers >= 2")
        if not self.sizes or min(self.sizes) < 8:
            raise MetadipError("tasks.sizes: crop sizes must be integers >= 8")
        if self.channels not in (1, 2, 3):
            raise MetadipError(f"tasks.channels: must be 1, 3 or 2 (complex), got {self.channels}")
        if self.crop_scale[0] <= 0:
            raise MetadipError("tasks.crop_scale: must be positive")
        if self.deblur_width[0] <= 0 or self.deblur_length[0] < 1:
            raise MetadipError("tasks: deblur width must be > 0 and length >= 1")
        if not 0.0 <= self.dead_leaves <= 1.0:
            raise MetadipError(f"tasks.dead_leaves: must be a fraction in [0, 1], got {self.dead_leaves}")
        if self.dead_leaves > 0 and self.channels == 2:
            raise MetadipError("tasks.dead_leaves: dead leaves are real pictures; they cannot mix into channels = 2")

    # -- serialisation ---------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TaskDistribution:
        return config_from_dict(cls, data, "tasks")

    def to_toml(self) -> str:
        return to_toml_text({"tasks": self.to_dict()})

    @classmethod
    def from_toml(cls, text: str) -> TaskDistribution:
        tomllib = _tomllib()
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise MetadipError(f"not valid TOML: {exc}") from None
        return cls.from_dict(data.get("tasks", data))

    @property
    def families(self) -> list[str]:
        return [f for f in FAMILIES if self.weights.get(f, 0) > 0]

    def middle_spec(self, family: str) -> str:
        """The operator spec in the middle of this distribution for ``family``: each range's midpoint, each list's
        first choice (e.g. ``denoise:sigma=30`` for σ in [10, 50]) — a typical task to check an init on."""

        def mid(pair: tuple[float, float]) -> float:
            return round((float(pair[0]) + float(pair[1])) / 2, 4)

        params: dict[str, Any] = {}
        if family == "inpaint":
            params = {"holes": self.inpaint_holes[0], "ratio": mid(self.inpaint_ratio)}
            if params["holes"] == "blocks":
                params["block"] = self.inpaint_block
        elif family == "superres":
            params = {"factor": self.superres_factors[0], "filter": self.superres_filters[0]}
        elif family == "deblur":
            params = {"kernel": self.deblur_kernels[0]}
            if params["kernel"] == "gauss":
                params["width"] = mid(self.deblur_width)
            else:
                params["length"] = round(mid(self.deblur_length))
        elif family == "fourier":
            params = {"pattern": self.fourier_patterns[0], "ratio": mid(self.fourier_ratio)}
        elif family != "denoise":
            raise MetadipError(f"unknown operator family {family!r}; valid: {', '.join(FAMILIES)}")
        params["sigma"] = mid(self.denoise_sigma if family == "denoise" else self.noise_sigma)
        return f"{family}:" + ",".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())

    # -- sampling --------------------------------------------------------------------------------------------
    def draw_spec(self, generator: torch.Generator) -> tuple[str, dict, float]:
        """Draw (family, operator parameters, noise σ) from ``generator``."""
        families = self.families
        weights = torch.tensor([float(self.weights[f]) for f in families], dtype=torch.float64)
        family = families[int(torch.multinomial(weights, 1, generator=generator))]

        def uniform(lo: float, hi: float) -> float:
            return float(lo + (hi - lo) * float(torch.rand((), generator=generator, dtype=torch.float64)))

        def choice(options: Sequence[Any]) -> Any:
            return options[int(torch.randint(len(options), (), generator=generator))]

        params: dict[str, Any] = {}
        if family == "denoise":
            sigma = uniform(*self.denoise_sigma)
        else:
            if family == "inpaint":
                params["holes"] = choice(self.inpaint_holes)
                params["ratio"] = uniform(*self.inpaint_ratio)
                if params["holes"] == "blocks":
                    params["block"] = int(self.inpaint_block)
            elif family == "superres":
                params["factor"] = int(choice(self.superres_factors))
                params["filter"] = choice(self.superres_filters)
            elif family == "deblur":
                params["kernel"] = choice(self.deblur_kernels)
                if params["kernel"] == "gauss":
                    params["width"] = uniform(*self.deblur_width)
                else:
                    lo, hi = self.deblur_length
                    params["length"] = int(lo + int(torch.randint(hi - lo + 1, (), generator=generator)))
            elif family == "fourier":
                patterns = self.fourier_patterns  # one pattern draws nothing (the stream of older recipes)
                params["pattern"] = choice(patterns) if len(patterns) > 1 else patterns[0]
                params["ratio"] = uniform(*self.fourier_ratio)
            sigma = uniform(*self.noise_sigma)
        params["sigma"] = round(sigma, 4)
        for key, value in params.items():
            if isinstance(value, float):
                params[key] = round(value, 4)
        return family, params, params["sigma"]

    def sample(
        self,
        images: Mapping[str, Any],
        generator: torch.Generator,
        seed: int = 0,
        *,
        dead_leaves: float | None = None,
    ) -> Task:
        """Draw one task from ``generator`` over ``images`` (name → 1×C×H×W, or a procedural source —
        :class:`metadip.images.DeadLeaves`, :class:`metadip.phantoms.Phantoms` — which renders a fresh picture at
        the crop size). ``seed`` is recorded
        in the task (its inner-loop randomness derives from it). ``dead_leaves`` overrides the distribution's
        fraction of dead-leaves tasks; with a positive fraction one extra number is drawn first (a fraction of 0
        draws exactly what it always did)."""
        fraction = self.dead_leaves if dead_leaves is None else float(dead_leaves)
        synthetic = fraction > 0 and float(torch.rand((), generator=generator, dtype=torch.float64)) < fraction
        if not images and not synthetic:
            raise MetadipError("no images to draw tasks from")
        if synthetic:
            name, image = DEAD_LEAVES, DeadLeaves()
        else:
            names = list(images)
            name = names[int(torch.randint(len(names), (), generator=generator))]
            image = images[name]
        size = int(self.sizes[int(torch.randint(len(self.sizes), (), generator=generator))])
        if isinstance(image, (DeadLeaves, Phantoms)):  # procedural: a fresh picture at the crop size
            x = image.draw(size, self.channels, generator)
        else:
            if image.shape[1] != self.channels:
                raise MetadipError(
                    f"image {name!r} has {image.shape[1]} channels, the task distribution {self.channels}"
                )
            x = random_patch(
                image,
                size,
                generator,
                scale=self.crop_scale,
                flips=self.flips,
                rotations=self.rotations,
                min_std=self.min_std,
            )
        family, params, sigma = self.draw_spec(generator)
        op = build_operator(OperatorSpec(family, params), (self.channels, size, size), generator=generator)
        y = simulate(x, op, generator)
        return Task(x=x, y=y, op=op, sigma=float(sigma), seed=int(seed), image=name, spec=op.spec())

    def task(self, images: Mapping[str, Any], seed: int, k: int, stream: str = "task") -> Task:
        """Task ``k`` of a run with seed ``seed``: a pure function of (seed, stream, k). Validation tasks (stream
        ``"val"``) never draw dead leaves."""
        task_seed = derive_seed(seed, stream, k)
        generator = torch.Generator(device="cpu")
        generator.manual_seed(task_seed)
        return self.sample(images, generator, seed=task_seed, dead_leaves=0.0 if stream == "val" else None)


class TaskSampler:
    """Binds a distribution, its images and a run seed: ``sampler(k)`` is task ``k`` of the run."""

    def __init__(
        self,
        distribution: TaskDistribution,
        images: Mapping[str, torch.Tensor],
        seed: int,
        stream: str = "task",
    ) -> None:
        self.distribution = distribution
        self.images = dict(images)
        self.seed = int(seed)
        self.stream = stream

    def __call__(self, k: int) -> Task:
        return self.distribution.task(self.images, self.seed, k, self.stream)

    def batch(self, indices: Sequence[int]) -> list[Task]:
        return [self(k) for k in indices]
