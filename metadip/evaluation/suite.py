"""Evaluation suites: :class:`RunSpec` blocks, the :class:`EvalConfig` of one evaluation (TOML round trip:
``evaluate/suites/*.toml``, a run's ``config.toml``) and the ``--quick`` suite. The first step of the evaluation's
one-way flow (suite → arms → problems → runner → statistics → results → report, see :mod:`metadip.evaluation`)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from metadip.errors import MetadipError
from metadip.operators import parse_operator_spec
from metadip.stopping import STOPPING_RULES, Converged
from metadip.tasks import read_toml

MARGIN_DB = 0.5
BASELINE_CHOICES = ("random", "none")


#: ``metadip evaluate --quick``: the settings of ``evaluate/suites/quick.toml`` (a test keeps them equal).
QUICK_SUITE: dict[str, Any] = {
    "name": "quick",
    "description": "smoke test: 2 held-out images, 2 operators, 40 px, arms to convergence (cap 2000), 1 seed",
    "init": "auto",
    "baseline": "random",
    "stop": "holdout",
    "run": [
        {
            "tag": "seen",
            "images": "held-out",
            "max_images": 2,
            "operators": ["denoise:sigma=25", "inpaint:ratio=0.5"],
            "size": 40,
            "iterations": 2000,
            "seeds": 1,
        }
    ],
}


# ---------------------------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class RunSpec:
    """One block of cases: every image × operator × seed at one size and budget."""

    operators: tuple[str, ...]
    images: str = "held-out"  # "held-out" | a folder | NAME[,NAME...] (scikit-image samples or files)
    size: int = 64
    iterations: int = 600
    seeds: int = 3
    max_images: int | None = None
    tag: str = ""  # free label, e.g. "seen" or "left-out"

    def __post_init__(self) -> None:
        if isinstance(self.operators, str):
            object.__setattr__(self, "operators", (self.operators,))
        object.__setattr__(self, "operators", tuple(str(s).strip() for s in self.operators))
        if not self.operators:
            raise MetadipError("no operators given (--operators SPEC [SPEC ...])")
        for spec in self.operators:
            parse_operator_spec(spec)
        if len(set(self.operators)) != len(self.operators):
            raise MetadipError("an operator is listed twice")
        for name, low in (("size", 8), ("iterations", 1), ("seeds", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise MetadipError(f"{name} must be an integer >= {low}, got {value!r}")
        if self.max_images is not None and (not isinstance(self.max_images, int) or self.max_images < 1):
            raise MetadipError(f"max_images must be an integer >= 1, got {self.max_images!r}")
        if not str(self.images).strip():
            raise MetadipError("empty --images")


@dataclass(frozen=True)
class EvalConfig:
    """An evaluation: the inits to compare and one or more :class:`RunSpec` blocks."""

    runs: tuple[RunSpec, ...]
    init: str = "auto"  # checkpoint name or path; "auto" = first shipped checkpoint; "random" = random arm only
    baseline: str = "random"  # "random": also run random init; "none": the init's arm only
    stop: str = "holdout"  # the watched no-ground-truth stopping rule
    arch: str | None = None  # architecture for --init random (default: skip-slim)
    name: str = "evaluate"
    description: str = ""
    margin_db: float = MARGIN_DB
    bands: int = 8
    converge: bool = True  # run each arm until its PSNR has passed its peak (``iterations`` is then the cap)
    patience: int = 500  # converge: stop after max(patience, patience_fraction × iterations so far) without gain
    patience_fraction: float = 0.5
    ssim_every: int = 10  # SSIM on every iteration up to dip.SSIM_DENSE, then every k-th (PSNR: always every one)
    per_operator_auto: bool = True  # init = "auto": each operator gets reconstruct's own --init auto choice

    def __post_init__(self) -> None:
        if isinstance(self.runs, RunSpec):
            object.__setattr__(self, "runs", (self.runs,))
        object.__setattr__(self, "runs", tuple(self.runs))
        if not self.runs:
            raise MetadipError("an evaluation needs at least one run")
        if self.baseline not in BASELINE_CHOICES:
            raise MetadipError(f"unknown baseline {self.baseline!r}; valid: {', '.join(BASELINE_CHOICES)}")
        if str(self.stop).lower() not in STOPPING_RULES:
            raise MetadipError(f"unknown stopping rule {self.stop!r}; valid: {', '.join(STOPPING_RULES)}")
        object.__setattr__(self, "stop", str(self.stop).lower())
        if not str(self.init).strip():
            raise MetadipError("empty --init")
        if not self.margin_db > 0:
            raise MetadipError("margin_db must be > 0")
        if not isinstance(self.bands, int) or self.bands < 2:
            raise MetadipError("bands must be an integer >= 2")
        if not isinstance(self.converge, bool):
            raise MetadipError(f"converge must be true or false, got {self.converge!r}")
        if isinstance(self.patience, bool) or not isinstance(self.patience, int) or self.patience < 1:
            raise MetadipError(f"patience must be an integer >= 1, got {self.patience!r}")
        if not isinstance(self.patience_fraction, (int, float)) or not 0 <= self.patience_fraction < 1:
            raise MetadipError(f"patience_fraction must be in [0, 1), got {self.patience_fraction!r}")
        if isinstance(self.ssim_every, bool) or not isinstance(self.ssim_every, int) or self.ssim_every < 1:
            raise MetadipError(f"ssim_every must be an integer >= 1, got {self.ssim_every!r}")

    def convergence_rule(self):
        """A fresh :class:`~metadip.stopping.Converged` rule for one arm, or None for fixed budgets."""
        return Converged(self.patience, float(self.patience_fraction)) if self.converge else None

    def to_dict(self) -> dict:
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "runs"}
        data["run"] = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(r).items()} for r in self.runs]
        return data

    @classmethod
    def from_dict(cls, data: dict, where: str = "suite") -> EvalConfig:
        data = dict(data)
        runs = data.pop("run", data.pop("runs", None))
        if not runs or not isinstance(runs, list):
            raise MetadipError(f"{where}: needs at least one [[run]] table")
        known = {f.name for f in fields(cls)} - {"runs"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise MetadipError(f"{where}: unknown key(s) {', '.join(unknown)}; valid: {', '.join(sorted(known))}, run")
        run_keys = {f.name for f in fields(RunSpec)}
        specs = []
        for index, run in enumerate(runs):
            if not isinstance(run, dict):
                raise MetadipError(f"{where}: run {index + 1} is not a table")
            bad = sorted(set(run) - run_keys)
            if bad:
                raise MetadipError(
                    f"{where}: run {index + 1}: unknown key(s) {', '.join(bad)}; valid: {', '.join(sorted(run_keys))}"
                )
            if "operators" not in run:
                raise MetadipError(f"{where}: run {index + 1} has no operators")
            specs.append(RunSpec(**{**run, "operators": tuple(run["operators"])}))
        if data.get("arch") == "":
            data["arch"] = None
        return cls(runs=tuple(specs), **data)

    def to_toml(self, header: str = "") -> str:
        lines = [f"# {line}" for line in header.splitlines()] if header else []
        for key, value in self.to_dict().items():
            if key != "run" and value is not None:
                lines.append(f"{key} = {_toml_value(value)}")
        for run in self.to_dict()["run"]:
            lines += ["", "[[run]]"]
            lines += [f"{k} = {_toml_value(v)}" for k, v in run.items() if v is not None]
        return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def load_suite(path: str | os.PathLike) -> EvalConfig:
    """Read a suite file (``evaluate/suites/*.toml``, or a run's ``config.toml``)."""
    return EvalConfig.from_dict(read_toml(path), where=str(path))


def quick_config() -> EvalConfig:
    """The ``--quick`` evaluation (same settings as ``evaluate/suites/quick.toml``)."""
    return EvalConfig.from_dict(json.loads(json.dumps(QUICK_SUITE)), where="quick suite")


def with_overrides(config: EvalConfig, **changes: Any) -> EvalConfig:
    """``config`` with top-level fields replaced (None values ignored)."""
    return replace(config, **{k: v for k, v in changes.items() if v is not None})
