"""Evaluation: how fast and how well DIP converges from a meta-learned init versus random init.

For every (image, operator, seed) the measurement ``y`` is drawn once, from a generator seeded by a hash of
(seed, image, operator), and DIP runs from each init on the same architecture — each with its own recipe; the
random arm is the DIP paper's — for a fixed budget (``stop="budget"``) with the clean image as ``reference``
(so full PSNR / SSIM curves are recorded) and the no-ground-truth stopping rule as a watch-only ``monitor``
(where it would have stopped and what it would have returned). A :class:`~metadip.spectral.SpectralRecorder`
callback records per-band errors and power spectra at log-spaced iterations.

Each finished arm is stored as ``DIR/cases/<name>_<key>.json`` (atomically), keyed by a hash of everything
that determines it (image content, operator, seed, size, init and its hash, architecture, budget, stopping
rule), and skipped when the same evaluation is run again; ``DIR/results.json`` / ``results.csv`` /
``config.toml`` / figures / ``report.md`` are then rebuilt from the stored cases.

``results.json`` keys (stable; other tools read them):

* ``cases``: one entry per (image, operator, seed, init) with ``image, operator, seed, init`` (``"meta"`` or
  ``"random"``), ``psnr`` and ``ssim`` (per iteration), ``peak_psnr, peak_iteration, stop_iteration,
  stop_psnr, seconds, ms_per_iteration`` and more (``size, family, tag, coverage, stop_output_iteration,
  stop_ssim, final_psnr, target_psnr, iterations_to_target, baselines, spectral, files, pair_key``).
* ``summary``: ``overall`` and ``by_operator`` (operator spec) → ``speedup_median, speedup_iqr,
  delta_peak_median, delta_stop_median, wall_clock_ratio_median, n_cases`` (+ medians of peaks, stops,
  iterations-to-target, baselines); also ``by_setting`` (operator @ size), ``by_family``, ``by_size``,
  ``by_tag``.
* ``config``: everything to re-run (options, command, init name + sha256, seeds, sizes, versions, date).
* ``problems``: per (image, operator, seed): baselines and the power spectra of the clean image and the
  measurement (for the spectral figure).

speedup = iterations random init needs to first reach (its peak − 0.5 dB) ÷ iterations meta init needs to
reach that PSNR (a meta run that never reaches it scores 0 and is counted). wall_clock_ratio is the same
ratio in seconds (iterations × ms per iteration of each arm).
"""

from __future__ import annotations

import csv
import datetime as _dt
import hashlib
import io
import json
import math
import os
import platform
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from metadip import api, metrics
from metadip.baselines import compute_baselines, measurement_view  # noqa: F401  (re-exported)
from metadip.errors import MetadipError
from metadip.fileio import atomic_write_json, atomic_write_text
from metadip.stopping import Converged, replay

CASE_FORMAT = 1
MARGIN_DB = 0.5
#: The speed–quality frontier: iterations (and seconds) each arm needs to reach random's peak − δ.
FRONTIER_DB = (0.25, 0.5, 1.0, 2.0)
ARMS = ("random", "meta")
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
        from metadip.operators import parse_operator_spec

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
        from metadip.stopping import STOPPING_RULES

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
    from metadip.tasks import read_toml

    return EvalConfig.from_dict(read_toml(path), where=str(path))


def quick_config() -> EvalConfig:
    """The ``--quick`` evaluation (same settings as ``evaluate/suites/quick.toml``)."""
    return EvalConfig.from_dict(json.loads(json.dumps(QUICK_SUITE)), where="quick suite")


# ----------------------------------------------------------------------------------------------------- inits


@dataclass
class Arm:
    """One side of the comparison: what to pass to :func:`metadip.api.reconstruct` and how to describe it."""

    label: str  # "meta" | "random"
    init: str  # api.reconstruct(init=...)
    arch: str | dict | None  # api.reconstruct(arch=...) (random arm only)
    name: str
    sha256: str
    arch_config: dict
    inner: dict
    card: str = ""
    training: dict = field(default_factory=dict)

    @property
    def out_channels(self) -> int:
        return int(self.arch_config.get("out_channels", 3))


def _short_hash(obj: Any, length: int = 16) -> str:
    text = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


#: Architecture options that only make sense with a measurement-conditioned z; the random arm drops them.
CONDITIONED_OPTIONS = ("residual", "residual_space")


def random_arch(meta_arch: dict) -> str | dict:
    """The random arm's architecture for a meta init's ``arch`` config: the same network as the DIP paper
    runs it — the preset by name when the config is a preset (plus its explicit overrides, minus the
    conditioned-input options and input width), else the config without the conditioned-input options."""
    from metadip.generators import PRESETS, build_generator

    name = str(meta_arch.get("name", ""))
    plain = {k: v for k, v in meta_arch.items() if k not in CONDITIONED_OPTIONS}
    if name in PRESETS:
        preset = build_generator(name, out_channels=int(meta_arch.get("out_channels", 3))).config
        overrides = {k: v for k, v in plain.items() if k != "in_channels" and preset.get(k) != v}
        return name if not overrides else {**preset, **overrides}
    return plain if plain != meta_arch else meta_arch


def _auto_init(config: EvalConfig | None = None) -> tuple[str | None, bool]:
    """``--init auto``: (name, mixed). The same choice as ``metadip reconstruct --init auto`` (any channel
    count) when it is the same for every operator of the suite; else the universal default, with mixed True."""
    from metadip.checkpoint import shipped_init_for, shipped_init_for_spec

    picks: set[str | None] = set()
    for run in config.runs if config is not None else ():
        for spec in run.operators:
            picks.add(shipped_init_for_spec(spec, run.size, channels=None))
    if len(picks) == 1:
        return picks.pop(), False
    return shipped_init_for(None), len(picks) > 1


def meta_arm(init: str, arch: str | None = None) -> Arm:
    """The meta arm of checkpoint ``init`` (a name or path)."""
    from metadip import checkpoint

    loaded = checkpoint.load_checkpoint(init)
    arch_name = loaded.arch_config.get("name")
    if arch is not None and arch != arch_name:
        raise MetadipError(
            f"--arch {arch} does not match the checkpoint's architecture {arch_name!r}; "
            "drop --arch (the random arm uses the checkpoint's architecture)"
        )
    return Arm(
        label="meta",
        init=str(loaded.path or init),
        arch=None,
        name=loaded.name,
        sha256=str(loaded.sidecar.get("sha256", "")),
        arch_config=dict(loaded.arch_config),
        inner=dict(loaded.inner),
        card=loaded.card,
        training=dict(loaded.training),
    )


def problem_arms(problem: Problem, arms: Sequence[Arm]) -> list[Arm]:
    """The arms of one problem: the suite's, with the meta arm replaced by the problem's own per-operator
    ``--init auto`` choice where it has one (dropped where auto picks random init)."""
    if problem.meta is None:
        return list(arms)
    if problem.meta == "random":
        return [a for a in arms if a.label != "meta"]
    return [problem.meta if a.label == "meta" else a for a in arms]


def resolve_arms(config: EvalConfig) -> tuple[list[Arm], list[str]]:
    """The arms to run (random first) and notes for the user (e.g. "random arm only")."""
    from metadip import checkpoint
    from metadip.generators import DEFAULT_ARCH, build_generator

    notes: list[str] = []
    init = str(config.init).strip()
    if init == "auto":
        found, mixed = _auto_init(config)
        if found is None:
            notes.append("no meta-learned checkpoint is installed: running the random-init arm only")
            init = "random"
        else:
            detail = (
                " for every operator (reconstruct's --init auto picks different inits for this suite's operators: "
                "evaluate them in separate suites, or one init with --init NAME)"
                if mixed
                else ""
            )
            if mixed and config.per_operator_auto:
                detail = (
                    " by default; each operator gets the init `metadip reconstruct --init auto` picks for it "
                    "(random init where auto picks random)"
                )
            notes.append(f"--init auto: using the shipped checkpoint {found!r}{detail}")
            init = found
    arms: list[Arm] = []
    meta: Arm | None = None
    if init != "random":
        meta = meta_arm(init, config.arch)
    elif config.baseline == "none":
        raise MetadipError("--baseline none needs a meta-learned --init (with --init random there is nothing left)")
    else:
        notes.append("--init random: no meta-learned init given, running the random-init arm only")
    if meta is None or config.baseline == "random":
        arch_spec = random_arch(meta.arch_config) if meta is not None else (config.arch or DEFAULT_ARCH)
        out_channels = meta.out_channels if meta is not None else None
        arch_config = build_generator(arch_spec, out_channels=out_channels).config
        if meta is not None and arch_config != meta.arch_config:
            notes.append(
                f"random arm: the {arch_config.get('name')!r} network as the DIP paper uses it (noise "
                f"input, {arch_config.get('in_channels')} channels), the meta init's architecture without "
                "its measurement-conditioned input options"
            )
        recipe = checkpoint.dip_recipe()
        arms.append(
            Arm(
                label="random",
                init="random",
                arch=arch_config,
                name="random",
                sha256="random-" + _short_hash({"arch": arch_config, "recipe": recipe}, 24),
                arch_config=arch_config,
                inner=recipe,
                card="random init, DIP paper recipe",
            )
        )
    if meta is not None:
        arms.append(meta)
    return arms, notes


# ----------------------------------------------------------------------------------------------------- images


@dataclass(frozen=True)
class ImageItem:
    name: str  # what results call it: sample name or path relative to its folder
    kind: str  # "sample" | "file" | "phantom" (a held-out procedural phantom, phantom-K)
    path: str | None = None


def _training_images(meta: Arm | None) -> tuple[str | None, list[str], list[str]]:
    if meta is None:
        return None, [], []
    training = meta.training
    held = training.get("held_out_images", training.get("held_out")) or []
    train = training.get("train_images") or []
    return str(training.get("image_source", "samples")), [str(n) for n in held], [str(n) for n in train]


def resolve_images(spec: str, meta: Arm | None = None, max_images: int | None = None) -> list[ImageItem]:
    """``held-out`` (the init's held-out images, else :data:`metadip.images.DEFAULT_HELD_OUT`), a folder of
    images, or a comma list of scikit-image sample names / image files."""
    from metadip import images as image_sources
    from metadip.imageio import SAMPLE_IMAGES
    from metadip.phantoms import held_out_index

    text = str(spec).strip()
    source, held, train = _training_images(meta)
    items: list[ImageItem]
    if text.lower() in ("held-out", "heldout", "held_out"):
        if meta is not None and held:
            if source in (None, image_sources.SAMPLES):
                items = [ImageItem(n, "sample") for n in held]
            else:
                folder = Path(source)
                if not folder.is_dir():
                    raise MetadipError(
                        f"the init's held-out images are in folder {folder}, which is not here; pass --images DIR|NAME"
                    )
                items = [ImageItem(n, "file", str(folder / n)) for n in held]
        else:
            items = [ImageItem(n, "sample") for n in image_sources.DEFAULT_HELD_OUT]
    elif Path(text).is_dir():
        root = Path(text)
        files = image_sources.find_image_files(root)
        if not files:
            raise MetadipError(f"no images ({', '.join(image_sources.IMAGE_EXTENSIONS)}) found below {root}")
        items = [ImageItem(p.relative_to(root).as_posix(), "file", str(p)) for p in files]
    else:
        items = []
        for token in (t.strip() for t in text.split(",")):
            if not token:
                continue
            name = token.split(":", 1)[1].strip() if token.lower().startswith("sample:") else token
            if name.lower() in SAMPLE_IMAGES:
                items.append(ImageItem(name.lower(), "sample"))
            elif held_out_index(token) is not None:
                items.append(ImageItem(token.lower(), "phantom"))
            elif Path(token).is_file():
                items.append(ImageItem(Path(token).name, "file", token))
            else:
                raise MetadipError(
                    f"--images: {token!r} is neither a folder, an image file, 'held-out', a held-out phantom "
                    f"(phantom-1, phantom-2, ...) nor a scikit-image sample ({', '.join(SAMPLE_IMAGES)})"
                )
        if not items:
            raise MetadipError("--images is empty")
    if meta is not None and source in (None, image_sources.SAMPLES):
        seen = [i.name for i in items if i.kind == "sample" and i.name in train]
        if seen:
            raise MetadipError(
                f"image(s) {', '.join(seen)} were in {meta.name!r}'s meta-training set; evaluate on "
                f"held-out images ({', '.join(held) or 'see the checkpoint'})"
            )
    names = [i.name for i in items]
    if len(set(names)) != len(names):
        raise MetadipError("--images lists an image twice")
    return items[:max_images] if max_images else items


def load_clean(item: ImageItem, size: int, channels: int) -> torch.Tensor:
    """The image as 1×channels×size×size in [0, 1]: centre square crop, anti-aliased resize. A held-out phantom
    (``phantom-K``) is rendered at ``size``; with 2 channels (a complex picture: real, imaginary) a phantom is
    its complex version and a grey picture gets a fixed smooth phase (:func:`metadip.phantoms.evaluation_phase`)."""
    from metadip.imageio import load_image_source, to_channels
    from metadip.phantoms import evaluation_phase, held_out_index, held_out_phantom

    if item.kind == "phantom":
        index = held_out_index(item.name)
        assert index is not None  # resolve_images made the item from a valid name
        if channels == 2:
            return held_out_phantom(index, size, complex_valued=True)
        return to_channels(held_out_phantom(index, size), channels, item.name).contiguous()
    source = f"sample:{item.name}" if item.kind == "sample" else str(item.path)
    image = load_image_source(source, size=size, max_pixels=None)
    if channels == 2:
        return evaluation_phase(to_channels(image.float(), 1, item.name), item.name)
    return to_channels(image.float(), channels).contiguous()


def _tensor_hash(tensor: torch.Tensor) -> str:
    return hashlib.sha256(tensor.detach().cpu().contiguous().numpy().tobytes()).hexdigest()[:16]


# -------------------------------------------------------------------------------------------------- problems


def measurement_seed(seed: int, image: str, operator: str) -> int:
    """The generator seed of one measurement: a hash of (seed, image, operator), reproducible everywhere."""
    digest = hashlib.sha256(f"{int(seed)}|{image}|{operator}".encode()).digest()
    return int.from_bytes(digest[:7], "big")


def make_problem(x: torch.Tensor, operator: str, seed: int, image: str):
    """(op, y): the operator (random parts drawn) and the measurement, from one seeded generator."""
    from metadip.operators import build_operator, simulate

    generator = torch.Generator().manual_seed(measurement_seed(seed, image, operator))
    op = build_operator(operator, tuple(x.shape[1:]), generator=generator)
    y = simulate(x, op, generator)
    return op, y


def coverage(operator: str, training: dict) -> str | None:
    """Whether ``operator`` was inside the init's meta-training distribution: ``"seen"``, ``"unseen family"``
    or ``"unseen <key>"`` (a parameter outside the trained range); None when the checkpoint does not say."""
    from metadip.operators import parse_operator_spec

    tasks = training.get("tasks") if isinstance(training, dict) else None
    if not isinstance(tasks, dict) or not isinstance(tasks.get("weights"), dict):
        return None
    spec = parse_operator_spec(operator)
    family, params = spec.name, spec.params
    if float(tasks["weights"].get(family, 0) or 0) <= 0:
        return "unseen family"

    def within(key: str, value: Any, tol: float = 1e-9) -> bool:
        low, high = tasks.get(key, (value, value))
        return float(low) - tol <= float(value) <= float(high) + tol

    def default(key: str) -> Any:
        from metadip.operators import OPERATORS

        return params.get(key, OPERATORS[family].keys()[key].default)

    try:
        if family == "denoise" and not within("denoise_sigma", default("sigma")):
            return "unseen sigma"
        if family != "denoise" and "noise_sigma" in tasks and not within("noise_sigma", default("sigma")):
            return "unseen sigma"
        if family == "inpaint":
            if default("holes") not in tasks.get("inpaint_holes", [default("holes")]):
                return "unseen holes"
            if not within("inpaint_ratio", default("ratio")):
                return "unseen ratio"
        if family == "superres":
            if int(default("factor")) not in [int(f) for f in tasks.get("superres_factors", [default("factor")])]:
                return "unseen factor"
            if default("filter") not in tasks.get("superres_filters", [default("filter")]):
                return "unseen filter"
        if family == "deblur":
            kernel = default("kernel")
            if kernel not in tasks.get("deblur_kernels", [kernel]):
                return "unseen kernel"
            if kernel == "gauss" and not within("deblur_width", default("width")):
                return "unseen width"
        if family == "fourier" and not within("fourier_ratio", default("ratio")):
            return "unseen ratio"
    except (KeyError, TypeError, ValueError):
        return None
    return "seen"


# ------------------------------------------------------------------------------------------------------ cases


def _slug(text: str, limit: int = 40) -> str:
    return re.sub(r"[^A-Za-z0-9.=]+", "-", str(text)).strip("-")[:limit] or "x"


def _round_list(values: Iterable[float], digits: int) -> list[float | None]:
    return [round(float(v), digits) if math.isfinite(float(v)) else None for v in values]


def run_arm(
    arm: Arm,
    x: torch.Tensor,
    y: torch.Tensor,
    op,
    *,
    seed: int,
    iterations: int,
    stop: str,
    device: str,
    bands: int,
    tensorboard: str | Path | None = None,
    converge=None,
    ssim_every: int = 1,
) -> tuple[dict, torch.Tensor]:
    """Run one arm for the full budget — or, with ``converge`` (a :class:`~metadip.stopping.Converged` rule),
    until its PSNR has passed its peak, ``iterations`` being the cap; return (record without identity fields,
    image at the watched rule's stop)."""
    from metadip.spectral import SpectralRecorder

    recorder = SpectralRecorder(x, iterations, n_bands=bands)
    ema_curve = EmaCurve(x, ema=CLASSIC_EMA)

    def callback(iteration, estimate, row, raw):
        recorder(iteration, estimate, row, raw)
        ema_curve(iteration, estimate, row, raw)

    result = api.reconstruct(
        y,
        op,
        init=arm.init,
        arch=arm.arch,
        iterations=iterations,
        stop=converge if converge is not None else "budget",
        ssim_every=ssim_every,
        seed=seed,
        device=device,
        reference=x,
        progress=False,
        tensorboard=tensorboard,
        callback=callback,
        monitor=stop,  # api applies the init's stop_options to it
    )
    psnr_curve = [float(v) for v in result.history.get("psnr", [])]
    ssim_curve = [float(v) for v in result.history.get("ssim", [])]
    if not psnr_curve:
        raise MetadipError(f"DIP produced no iterations for {op.spec()} ({result.stop_reason})")
    peak_index = int(np.nanargmax(np.asarray(psnr_curve)))
    monitor = result.extras.get("monitor") or {}
    stop_image = monitor.get("image", result.image).detach().cpu().float()
    run = len(psnr_curve)
    watched_stop = monitor.get("stop_iteration")
    record = {
        "psnr": _round_list(psnr_curve, 3),
        "ssim": _round_list(ssim_curve, 4),
        "peak_psnr": round(psnr_curve[peak_index], 4),
        "peak_iteration": peak_index + 1,
        "final_psnr": round(psnr_curve[-1], 4),
        "stop_rule": stop,
        "stop_iteration": int(watched_stop) if watched_stop is not None else run,
        "stop_triggered": watched_stop is not None,
        "stop_output_iteration": monitor.get("output_iteration"),
        "stop_psnr": round(metrics.psnr(stop_image, x), 4),
        "stop_ssim": round(metrics.ssim(stop_image, x), 4),
        "iterations": run,
        "seconds": round(float(result.seconds), 4),
        "ms_per_iteration": round(1000.0 * float(result.seconds) / run, 4),
        "end": result.stop_reason,
        "rollbacks": result.extras.get("rollbacks", 0),
        **({"converged": bool(converge.converged)} if converge is not None else {}),
        "peak_psnr_ema99": round(max(ema_curve.curve), 4),
        "spectral": recorder.to_dict(),
    }
    if any(abs(a - b) > 1e-9 for a, b in zip(ema_curve.curve, psnr_curve, strict=False)):
        record["psnr_ema99"] = _round_list(ema_curve.curve, 3)  # the arm's own recipe is not EMA 0.99
    return record, stop_image


#: DIP's classic output average (the paper's EMA weight), recorded for both arms whatever their own recipe.
CLASSIC_EMA = 0.99


class EmaCurve:
    """``callback(iteration, estimate, row, raw)`` keeping the PSNR of the EMA (weight ``ema``) of the raw
    outputs — the same average :func:`metadip.dip.fit` forms, so for an arm whose recipe uses that EMA the
    curve equals its own PSNR curve."""

    def __init__(self, reference: torch.Tensor, ema: float = CLASSIC_EMA) -> None:
        self.reference = reference.detach().float()
        self.ema = float(ema)
        self.average: torch.Tensor | None = None
        self.curve: list[float] = []

    def __call__(self, iteration: int, estimate: torch.Tensor, row=None, raw=None) -> None:
        current = (estimate if raw is None else raw).detach()
        if self.average is None:
            self.average = current.clone()
        else:
            self.average.mul_(self.ema).add_(current, alpha=1 - self.ema)
        self.curve.append(metrics.psnr(self.average.clamp(0, 1).to(self.reference.device), self.reference))


@dataclass
class Problem:
    """One (image, operator, seed, size) with its two-arm cache keys."""

    run_index: int
    item: ImageItem
    operator: str
    seed: int
    size: int
    iterations: int
    tag: str
    x: torch.Tensor
    image_sha: str
    pair_key: str
    meta: Arm | str | None = None  # per-operator auto: its own meta arm, "random" (auto picks random), None = suite's


def _pair_key(image: str, image_sha: str, operator: str, seed: int, size: int, channels: int) -> str:
    return _short_hash(
        {
            "image": image,
            "image_sha": image_sha,
            "operator": operator,
            "seed": int(seed),
            "size": int(size),
            "channels": int(channels),
            "format": CASE_FORMAT,
        }
    )


def run_mode(config: EvalConfig) -> dict:
    """What besides the problem and the arm determines a case: the convergence rule and the SSIM schedule
    (empty for the historical fixed-budget, every-iteration mode, so those cases keep their keys)."""
    mode: dict[str, Any] = {}
    if config.converge:
        mode["converge"] = [config.patience, float(config.patience_fraction)]
    if config.ssim_every != 1:
        mode["ssim_every"] = config.ssim_every
    return mode


def arm_key(problem: Problem, arm: Arm, stop: str, bands: int, mode: dict | None = None) -> str:
    """The cache key of one arm on one problem: everything that determines its result."""
    return _short_hash(
        {
            "pair": problem.pair_key,
            "init": arm.label,
            "init_sha256": arm.sha256,
            "arch": _short_hash(arm.arch_config),
            "iterations": int(problem.iterations),
            "stop": stop,
            "bands": int(bands),
            "format": CASE_FORMAT,
            **(mode or {}),
            **_recipe_levers(arm),
        }
    )


def _recipe_levers(arm: Arm) -> dict:
    """The online levers of an arm's recipe that change its result with the same weights (adaptation mode,
    loss), for the cache key — only when set away from their defaults, so cases of recipes without them keep
    their keys."""
    levers = {k: arm.inner[k] for k, default in LEVER_DEFAULTS.items() if arm.inner.get(k, default) != default}
    return {"levers": levers} if levers else {}


LEVER_DEFAULTS = {"adapt": "all", "loss": "mse"}


def _case_name(problem: Problem, label: str, key: str) -> str:
    family = problem.operator.split(":", 1)[0]
    return f"{_slug(problem.item.name, 24)}_{family}_s{problem.seed}_{problem.size}px_{label}_{key}"


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def plan(config: EvalConfig, arms: Sequence[Arm]) -> list[Problem]:
    """Every problem of ``config`` in run → image → operator → seed order (loads the clean images)."""
    meta = next((a for a in arms if a.label == "meta"), None)
    channels = arms[0].out_channels
    problems: list[Problem] = []
    seen_keys: set[str] = set()
    auto_arms: dict[str, Arm] = {}

    def own_arm(spec: str, size: int) -> Arm | str | None:
        """The per-operator ``--init auto`` arm when it differs from the suite's meta arm."""
        from metadip.checkpoint import shipped_init_for_spec

        if not (config.per_operator_auto and str(config.init).strip() == "auto" and meta is not None):
            return None
        pick = shipped_init_for_spec(spec, size, channels=channels)
        if pick is None:
            return "random"
        if pick == meta.name:
            return None
        if pick not in auto_arms:
            auto_arms[pick] = meta_arm(pick, config.arch)
        return auto_arms[pick]

    for index, run in enumerate(config.runs):
        items = resolve_images(run.images, meta, run.max_images)
        for item in items:
            x = load_clean(item, run.size, channels)
            image_sha = _tensor_hash(x)
            for operator in run.operators:
                for seed in range(run.seeds):
                    key = _pair_key(item.name, image_sha, operator, seed, run.size, channels)
                    if key in seen_keys:
                        continue  # the same problem listed in two runs: evaluated once
                    seen_keys.add(key)
                    problems.append(
                        Problem(
                            index,
                            item,
                            operator,
                            seed,
                            run.size,
                            run.iterations,
                            run.tag,
                            x,
                            image_sha,
                            key,
                            own_arm(operator, run.size),
                        )
                    )
    return problems


def _save_png(path: Path, image: torch.Tensor) -> None:
    from metadip.imageio import write_image

    write_image(path, image.detach().cpu().float().clamp(0, 1))


def _problem_record(
    problem: Problem, out: Path, cases_dir: Path, images_dir: Path, arms: Sequence[Arm], bands: int
) -> tuple[dict, Any, torch.Tensor]:
    """Load or build the problem record (baselines, clean / measurement spectra and PNGs); returns it with
    the operator and y (drawn again — deterministic — when an arm still has to run)."""
    from metadip.spectral import spectrum_record

    op, y = make_problem(problem.x, problem.operator, problem.seed, problem.item.name)
    path = cases_dir / f"{_case_name(problem, 'problem', problem.pair_key)}.json"
    cached = _read_json(path)
    base = (
        f"{_slug(problem.item.name, 24)}_{problem.operator.split(':', 1)[0]}_s{problem.seed}_"
        f"{problem.size}px_{problem.pair_key}"
    )
    files = {"clean": f"images/{base}_clean.png", "measurement": f"images/{base}_measurement.png"}
    if cached and cached.get("pair_key") == problem.pair_key and all((out / f).is_file() for f in files.values()):
        return cached, op, y
    view, kind = measurement_view(y, op)
    _save_png(out / files["clean"], problem.x)
    _save_png(out / files["measurement"], view)
    meta = next((a for a in arms if a.label == "meta"), None)
    record = {
        "pair_key": problem.pair_key,
        "image": problem.item.name,
        "image_sha256": problem.image_sha,
        "operator": problem.operator,
        "operator_canonical": op.spec(),
        "family": op.name,
        "seed": problem.seed,
        "size": problem.size,
        "tag": problem.tag,
        "coverage": coverage(problem.operator, meta.training) if meta is not None else None,
        "measurement_seed": measurement_seed(problem.seed, problem.item.name, problem.operator),
        "measurement_kind": kind,
        "baselines": compute_baselines(problem.x, y, op),
        "spectra": {"clean": spectrum_record(problem.x), "measurement": spectrum_record(view)},
        "files": files,
    }
    atomic_write_json(path, record)
    return record, op, y


ProgressFactory = Callable[[int], Any]


@dataclass
class _Task:
    """One arm on one problem, everything a worker process needs to run it and store the case."""

    problem: Problem
    arm: Arm
    key: str
    name: str
    problem_record: dict
    out: str
    stop: str
    bands: int
    device: str
    tensorboard: str | None
    converge: tuple[int, float] | None = None  # (patience, fraction) of the Converged rule; None = fixed budget
    ssim_every: int = 1


def _execute(task: _Task) -> dict:
    """Run one arm (the measurement is drawn again: deterministic) and store its case file and PNG."""
    problem, arm, out = task.problem, task.arm, Path(task.out)
    op, y = make_problem(problem.x, problem.operator, problem.seed, problem.item.name)
    tb = None
    if task.tensorboard is not None:
        tb = (
            Path(task.tensorboard)
            / _slug(problem.item.name)
            / _slug(problem.operator)
            / f"s{problem.seed}_{problem.size}px"
            / arm.label
        )
    body, stop_image = run_arm(
        arm,
        problem.x,
        y,
        op,
        seed=problem.seed,
        iterations=problem.iterations,
        stop=task.stop,
        device=task.device,
        bands=task.bands,
        tensorboard=tb,
        converge=None if task.converge is None else Converged(*task.converge),
        ssim_every=task.ssim_every,
    )
    stop_png = f"images/{task.name}_stop.png"
    _save_png(out / stop_png, stop_image)
    prob = task.problem_record
    record = {
        "key": task.key,
        "pair_key": problem.pair_key,
        "image": problem.item.name,
        "operator": problem.operator,
        "family": prob["family"],
        "size": problem.size,
        "tag": problem.tag,
        "coverage": prob.get("coverage"),
        "seed": problem.seed,
        "init": arm.label,
        "init_name": arm.name,
        "init_sha256": arm.sha256,
        "budget": problem.iterations,
        **body,
        "files": {**prob["files"], "stop": stop_png},
    }
    atomic_write_json(out / "cases" / f"{task.name}.json", record)
    return record


def _worker_init(threads: int) -> None:
    os.environ["OMP_NUM_THREADS"] = str(threads)  # metadip.runtime.configure_threads respects it
    torch.set_num_threads(threads)


def set_threads(threads: int | None) -> None:
    """Use ``threads`` intra-op CPU threads from now on (also for :func:`metadip.api.reconstruct`, which keeps
    an explicit ``OMP_NUM_THREADS``). None leaves the default (every core)."""
    if threads is not None:
        if threads < 1:
            raise MetadipError(f"threads must be >= 1, got {threads}")
        _worker_init(int(threads))


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


def parallelism(jobs: int, threads: int | None, device: str, n_tasks: int) -> tuple[int, int | None]:
    """(worker processes, CPU threads per run). ``jobs`` 0 = auto: one process on CUDA, else one
    single-threaded worker per core (at most 8, at most one per case) — small DIP nets use several cores far
    better as parallel runs than as threads of one run (measured: 10× on 2 shared cores). ``threads`` None =
    all cores for one process, cores // jobs for several."""
    from metadip.runtime import resolve_device

    if jobs < 0:
        raise MetadipError(f"jobs must be >= 0 (0 = auto), got {jobs}")
    if threads is not None and threads < 1:
        raise MetadipError(f"threads must be >= 1, got {threads}")
    cores = _cores()
    if jobs == 0:
        jobs = 1 if resolve_device(device).type == "cuda" else max(1, min(cores, 8, n_tasks))
    jobs = max(1, min(jobs, max(1, n_tasks)))
    if threads is None and jobs > 1:
        threads = max(1, cores // jobs)
    return jobs, threads


def run_cases(
    config: EvalConfig,
    out: str | Path,
    *,
    device: str = "auto",
    tensorboard: str | Path | None = None,
    progress: bool = True,
    echo: Callable[[str], None] | None = None,
    arms: Sequence[Arm] | None = None,
    jobs: int = 1,
    threads: int | None = None,
) -> tuple[list[dict], list[dict], list[Arm], dict]:
    """Run (or load from ``out/cases``) every arm of every problem. Returns (case records, problem records,
    arms, counts {"run": n, "skipped": m, "jobs": j, "threads": t}).

    Cases run in ``jobs`` worker processes (``spawn``; 0 = auto, see :func:`parallelism`; the command line's
    default) with ``threads`` CPU threads each. Spawned workers re-import the calling script, so a script using
    ``jobs != 1`` needs an ``if __name__ == "__main__":`` guard. Per-iteration times then include the
    contention of parallel runs; both arms share it.
    """
    echo = echo or (lambda message: print(message, file=sys.stderr))
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise MetadipError(f"--out {out} exists and is not a directory")
    if arms is None:
        arms, notes = resolve_arms(config)
        for note in notes:
            echo(note)
    problems = plan(config, arms)
    cases_dir, images_dir = out / "cases", out / "images"
    counts = {"run": 0, "skipped": 0}
    done: dict[str, dict] = {}
    order: list[str] = []
    problem_records: list[dict] = []
    tasks: list[_Task] = []
    for problem in problems:
        own = problem_arms(problem, arms)
        prob, _, _ = _problem_record(problem, out, cases_dir, images_dir, own, config.bands)
        meta = next((a for a in own if a.label == "meta"), None)
        # labels are not part of the cache key: a reused case takes this run's tag and the current init's view
        prob = {
            **prob,
            "tag": problem.tag,
            "coverage": coverage(problem.operator, meta.training) if meta is not None else None,
        }
        problem_records.append(prob)
        for arm in own:
            key = arm_key(problem, arm, config.stop, config.bands, run_mode(config))
            name = _case_name(problem, arm.label, key)
            order.append(key)
            cached = _read_json(cases_dir / f"{name}.json")
            if cached and cached.get("key") == key and (out / f"images/{name}_stop.png").is_file():
                done[key] = {**cached, "tag": problem.tag, "coverage": prob["coverage"]}
                counts["skipped"] += 1
                continue
            tasks.append(
                _Task(
                    problem,
                    arm,
                    key,
                    name,
                    prob,
                    str(out),
                    config.stop,
                    config.bands,
                    str(device),
                    None if tensorboard is None else str(tensorboard),
                    (config.patience, float(config.patience_fraction)) if config.converge else None,
                    config.ssim_every,
                )
            )
    jobs, threads = parallelism(jobs, threads, device, len(tasks))
    counts.update(jobs=jobs, threads=threads if threads is not None else torch.get_num_threads())
    if jobs == 1:
        set_threads(threads)
        counts["threads"] = torch.get_num_threads() if threads is None else threads
    from tqdm.auto import tqdm

    bar = tqdm(
        total=len(order),
        initial=counts["skipped"],
        desc="evaluate",
        unit="case",
        disable=None if progress else True,
        dynamic_ncols=True,
    )

    def finished(record: dict) -> None:
        done[record["key"]] = record
        counts["run"] += 1
        bar.update(1)

    try:
        if jobs == 1:
            for task in tasks:
                bar.set_postfix_str(
                    f"{task.problem.item.name} {task.problem.operator} s{task.problem.seed} {task.arm.label}",
                    refresh=False,
                )
                finished(_execute(task))
        else:
            import concurrent.futures as futures
            import multiprocessing

            per_worker = threads or 1
            context = multiprocessing.get_context("spawn")
            with futures.ProcessPoolExecutor(
                max_workers=jobs, mp_context=context, initializer=_worker_init, initargs=(per_worker,)
            ) as pool:
                pending = [pool.submit(_execute, task) for task in tasks]
                try:
                    for future in futures.as_completed(pending):
                        finished(future.result())
                except BaseException:
                    for future in pending:
                        future.cancel()
                    raise
    finally:
        bar.close()
    records = [done[key] for key in order]
    return records, problem_records, list(arms), counts


# ------------------------------------------------------------------------------------------------- statistics


def _finite(values: Iterable[Any]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(float(v))]


def median(values: Iterable[Any]) -> float | None:
    """Median of the finite values (None if there are none)."""
    vals = _finite(values)
    return float(np.median(vals)) if vals else None


def quantiles(values: Iterable[Any]) -> tuple[float | None, float | None]:
    vals = _finite(values)
    if not vals:
        return None, None
    return float(np.percentile(vals, 25)), float(np.percentile(vals, 75))


def iqr(values: Iterable[Any]) -> float | None:
    """Interquartile range q75 − q25 (linear interpolation, numpy's default)."""
    q25, q75 = quantiles(values)
    return None if q25 is None else q75 - q25


def pair_statistics(random_case: dict, meta_case: dict, margin_db: float = MARGIN_DB) -> dict:
    """Speed / quality comparison of one (image, operator, seed): target = random's peak − margin;
    iterations each arm needs to first reach it (None = never), speedup (0 when meta never reaches it),
    wall-clock ratio (the same in seconds), delta_peak and delta_stop (meta − random, dB)."""
    random_curve = _finite(random_case["psnr"])
    meta_curve = [float(v) if v is not None else -math.inf for v in meta_case["psnr"]]
    target = max(random_curve) - margin_db
    random_iters = metrics.first_reaching(random_curve, target)
    meta_iters = metrics.first_reaching(meta_curve, target)
    speed = metrics.speedup(random_curve, meta_curve, margin_db)
    if meta_iters is None:
        wall = 0.0
    else:
        wall = (random_iters * float(random_case["ms_per_iteration"])) / max(
            meta_iters * float(meta_case["ms_per_iteration"]), 1e-12
        )
    return {
        "target_psnr": target,
        "iterations_random": random_iters,
        "iterations_meta": meta_iters,
        "speedup": speed,
        "wall_clock_ratio": wall,
        "delta_peak": float(meta_case["peak_psnr"]) - float(random_case["peak_psnr"]),
        "delta_stop": float(meta_case["stop_psnr"]) - float(random_case["stop_psnr"]),
        "frontier": frontier(random_case, meta_case),
    }


def frontier(random_case: dict, meta_case: dict, deltas: Sequence[float] = FRONTIER_DB) -> dict[str, dict]:
    """Per δ (key ``f"{δ:g}"``): iterations and seconds each arm needs to first reach random's peak − δ
    (None = never) and the iteration speedup (0 when meta never gets there)."""
    random_curve = _finite(random_case["psnr"])
    meta_curve = [float(v) if v is not None else -math.inf for v in meta_case["psnr"]]
    peak = max(random_curve)
    out: dict[str, dict] = {}
    for delta in deltas:
        target = peak - float(delta)
        r_it = metrics.first_reaching(random_curve, target)
        m_it = metrics.first_reaching(meta_curve, target)
        out[f"{float(delta):g}"] = {
            "iterations_random": r_it,
            "iterations_meta": m_it,
            "seconds_random": None if r_it is None else round(r_it * float(random_case["ms_per_iteration"]) / 1e3, 3),
            "seconds_meta": None if m_it is None else round(m_it * float(meta_case["ms_per_iteration"]) / 1e3, 3),
            "speedup": 0.0 if m_it is None else round(float(r_it) / float(m_it), 4),
        }
    return out


def _rounded(value: float | None, digits: int = 4) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), digits)


def _median_with_never(values: Sequence[int | None]) -> float | None:
    """Median counting never (None) as +inf; None when the median itself is 'never'."""
    if not values:
        return None
    vals = [math.inf if v is None else float(v) for v in values]
    result = float(np.median(vals))
    return None if math.isinf(result) or math.isnan(result) else result


def summarize(cases: Sequence[dict], margin_db: float = MARGIN_DB) -> dict:
    """Summary statistics of a group of cases (both arms; pairs matched by ``pair_key``)."""
    by_arm: dict[str, dict[str, dict]] = {label: {} for label in ARMS}
    for case in cases:
        by_arm.setdefault(case["init"], {})[case["pair_key"]] = case
    random_cases, meta_cases = by_arm.get("random", {}), by_arm.get("meta", {})
    pairs = [pair_statistics(random_cases[k], meta_cases[k], margin_db) for k in random_cases if k in meta_cases]
    keys = list(dict.fromkeys(c["pair_key"] for c in cases))
    summary: dict[str, Any] = {
        "n_cases": len(keys),
        "n_pairs": len(pairs),
        "n_images": len({c["image"] for c in cases}),
        "n_seeds": len({c["seed"] for c in cases}),
    }
    speedups = [p["speedup"] for p in pairs]
    q25, q75 = quantiles(speedups)
    summary.update(
        {
            "speedup_median": _rounded(median(speedups)),
            "speedup_iqr": _rounded(iqr(speedups)),
            "speedup_q25": _rounded(q25),
            "speedup_q75": _rounded(q75),
            "meta_reached_fraction": _rounded(sum(p["iterations_meta"] is not None for p in pairs) / len(pairs))
            if pairs
            else None,
            "iterations_to_target_random_median": _rounded(
                _median_with_never([p["iterations_random"] for p in pairs]), 1
            ),
            "iterations_to_target_meta_median": _rounded(_median_with_never([p["iterations_meta"] for p in pairs]), 1),
            "delta_peak_median": _rounded(median(p["delta_peak"] for p in pairs)),
            "delta_stop_median": _rounded(median(p["delta_stop"] for p in pairs)),
            "wall_clock_ratio_median": _rounded(median(p["wall_clock_ratio"] for p in pairs)),
            "frontier": {
                key: {
                    "iterations_random_median": _rounded(
                        _median_with_never([p["frontier"][key]["iterations_random"] for p in pairs]), 1
                    ),
                    "iterations_meta_median": _rounded(
                        _median_with_never([p["frontier"][key]["iterations_meta"] for p in pairs]), 1
                    ),
                    "seconds_random_median": _rounded(
                        _median_with_never([p["frontier"][key]["seconds_random"] for p in pairs]), 2
                    ),
                    "seconds_meta_median": _rounded(
                        _median_with_never([p["frontier"][key]["seconds_meta"] for p in pairs]), 2
                    ),
                    "speedup_median": _rounded(median(p["frontier"][key]["speedup"] for p in pairs)),
                    "meta_reached_fraction": _rounded(
                        sum(p["frontier"][key]["iterations_meta"] is not None for p in pairs) / len(pairs)
                    ),
                }
                for key in (pairs[0]["frontier"] if pairs else {})
            },
        }
    )
    if not pairs and random_cases:  # random arm only: its own iterations to (peak − margin)
        reached = []
        for case in random_cases.values():
            curve = _finite(case["psnr"])
            reached.append(metrics.first_reaching(curve, max(curve) - margin_db) if curve else None)
        summary["iterations_to_target_random_median"] = _rounded(_median_with_never(reached), 1)
    for label, group in (("random", random_cases), ("meta", meta_cases)):
        if not group:
            continue
        values = list(group.values())
        summary[f"{label}_peak_psnr_median"] = _rounded(median(c["peak_psnr"] for c in values))
        summary[f"{label}_peak_iteration_median"] = _rounded(median(c["peak_iteration"] for c in values), 1)
        summary[f"{label}_stop_psnr_median"] = _rounded(median(c["stop_psnr"] for c in values))
        summary[f"{label}_stop_iteration_median"] = _rounded(median(c["stop_iteration"] for c in values), 1)
        summary[f"{label}_ms_per_iteration_median"] = _rounded(median(c["ms_per_iteration"] for c in values), 2)
        summary[f"{label}_seconds_median"] = _rounded(median(c.get("seconds") for c in values), 2)
        summary[f"{label}_iterations_median"] = _rounded(median(c.get("iterations") for c in values), 1)
        summary[f"{label}_peak_psnr_ema99_median"] = _rounded(
            median(c.get("peak_psnr_ema99", c["peak_psnr"]) for c in values)
        )
        summary[f"{label}_capped"] = sum(bool(c.get("iterations", 0) >= c.get("budget", math.inf)) for c in values)
        summary[f"{label}_still_improving_at_end"] = sum(still_improving(c) for c in values)
    baselines: dict[str, list[float]] = {}
    seen_pairs: set[str] = set()
    for case in cases:
        if case["pair_key"] in seen_pairs:
            continue
        seen_pairs.add(case["pair_key"])
        for name, value in (case.get("baselines") or {}).items():
            baselines.setdefault(name, []).append(value)
    summary["baselines_median"] = {k: _rounded(median(v)) for k, v in baselines.items()}
    return summary


def still_improving(case: dict, window: int = 100, gain_db: float = 0.05, patience: int = 500) -> bool:
    """Whether a run ended while it was still getting better — its "peak" is then the budget's. A run of a
    converged suite (it has ``converged``): it hit the cap with a 0.01 dB gain in its last ``patience``
    iterations (replayed from its curve; a capped run that had plateaued longer is not flagged). A fixed-budget
    run: its last ``window`` iterations gained more than ``gain_db``."""
    if case.get("converged"):
        return False
    curve = _finite(case.get("psnr") or [])
    if "converged" in case:
        stopped_at, progress = replay(curve, patience=patience)
        return stopped_at is None and len(curve) - progress < patience
    if case.get("capped_while_improving"):
        return True
    if len(curve) <= window:
        return False
    return max(curve[-window:]) - max(curve[:-window]) > gain_db


def setting_label(case: dict) -> str:
    """``operator @ SIZEpx`` — the unit the report and README rows are about."""
    return f"{case['operator']} @ {case['size']}px"


def build_summary(cases: Sequence[dict], margin_db: float = MARGIN_DB) -> dict:
    """``overall``, ``by_operator`` (spec), ``by_setting`` (spec @ size), ``by_family``, ``by_size``,
    ``by_tag``."""

    def grouped(key: Callable[[dict], str]) -> dict[str, dict]:
        groups: dict[str, list[dict]] = {}
        for case in cases:
            groups.setdefault(key(case), []).append(case)
        return {name: summarize(group, margin_db) for name, group in groups.items()}

    summary = {
        "overall": summarize(cases, margin_db),
        "by_operator": grouped(lambda c: c["operator"]),
        "by_setting": grouped(setting_label),
        "by_family": grouped(lambda c: c["family"]),
        "by_size": grouped(lambda c: str(c["size"])),
    }
    if any(c.get("tag") for c in cases):
        summary["by_tag"] = grouped(lambda c: c.get("tag") or "untagged")
    for name, case in ((setting_label(c), c) for c in cases):
        entry = summary["by_setting"][name]
        entry.setdefault("operator", case["operator"])
        entry.setdefault("size", case["size"])
        entry.setdefault("tag", case.get("tag", ""))
        entry.setdefault("coverage", case.get("coverage"))
    return summary


def annotate_pairs(cases: list[dict], margin_db: float = MARGIN_DB) -> None:
    """Add ``target_psnr`` and ``iterations_to_target`` (and ``speedup`` on meta cases) in place."""
    random_cases = {c["pair_key"]: c for c in cases if c["init"] == "random"}
    meta_cases = {c["pair_key"]: c for c in cases if c["init"] == "meta"}
    for key, random_case in random_cases.items():
        curve = _finite(random_case["psnr"])
        target = max(curve) - margin_db
        random_case["target_psnr"] = round(target, 4)
        random_case["iterations_to_target"] = metrics.first_reaching(curve, target)
        meta_case = meta_cases.get(key)
        if meta_case is not None:
            stats = pair_statistics(random_case, meta_case, margin_db)
            meta_case["target_psnr"] = round(target, 4)
            meta_case["iterations_to_target"] = stats["iterations_meta"]
            meta_case["speedup"] = round(stats["speedup"], 4)
            meta_case["wall_clock_ratio"] = round(stats["wall_clock_ratio"], 4)
    for case in cases:
        case.setdefault("target_psnr", None)
        case.setdefault("iterations_to_target", None)
        if "converged" in case:  # derived from the curve, one definition (still_improving) for every reader
            case["capped_while_improving"] = still_improving(case)


# ---------------------------------------------------------------------------------------------- results files

CASE_KEYS = (
    "image",
    "operator",
    "seed",
    "init",
    "psnr",
    "ssim",
    "peak_psnr",
    "peak_iteration",
    "stop_iteration",
    "stop_psnr",
    "seconds",
    "ms_per_iteration",
)
SUMMARY_KEYS = (
    "speedup_median",
    "speedup_iqr",
    "delta_peak_median",
    "delta_stop_median",
    "wall_clock_ratio_median",
    "n_cases",
)
CSV_COLUMNS = (
    "image",
    "operator",
    "family",
    "size",
    "tag",
    "coverage",
    "seed",
    "init",
    "init_name",
    "budget",
    "iterations",
    "peak_psnr",
    "peak_iteration",
    "final_psnr",
    "stop_iteration",
    "stop_triggered",
    "stop_output_iteration",
    "stop_psnr",
    "stop_ssim",
    "converged",
    "capped_while_improving",
    "peak_psnr_ema99",
    "target_psnr",
    "iterations_to_target",
    "speedup",
    "wall_clock_ratio",
    "seconds",
    "ms_per_iteration",
)


def _versions() -> dict:
    import importlib.metadata as md

    import metadip

    out = {
        "metadip": metadip.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    for package in ("scikit-image", "matplotlib", "bm3d"):
        try:
            out[package] = md.version(package)
        except md.PackageNotFoundError:
            pass
    return out


def command_line(config: EvalConfig, out: str | Path, config_path: str | Path | None = None) -> list[str]:
    """argv that re-runs ``config`` (one run: plain options; several: ``--config FILE``)."""
    argv = ["metadip", "evaluate"]
    if len(config.runs) == 1:
        run = config.runs[0]
        argv += [
            "--images",
            run.images,
            "--operators",
            *run.operators,
            "--size",
            str(run.size),
            "--iterations",
            str(run.iterations),
            "--seeds",
            str(run.seeds),
        ]
        if run.max_images:
            argv += ["--max-images", str(run.max_images)]
        if run.tag:
            argv += ["--tag", run.tag]
    else:
        argv += ["--config", str(config_path or Path(out) / "config.toml")]
    argv += ["--init", config.init, "--baseline", config.baseline, "--stop", config.stop]
    if config.arch:
        argv += ["--arch", config.arch]
    return argv + ["--out", str(out)]


def assemble(
    config: EvalConfig,
    records: Sequence[dict],
    problem_records: Sequence[dict],
    arms: Sequence[Arm],
    *,
    out: str | Path,
    device: str = "auto",
    notes: Sequence[str] = (),
    jobs: int = 1,
    threads: int | None = None,
) -> dict:
    """The ``results.json`` object (see the module docstring)."""
    from metadip.runtime import resolve_device

    cases = [dict(r) for r in records]
    annotate_pairs(cases, config.margin_db)
    problems = {p["pair_key"]: p for p in problem_records}
    for case in cases:
        case["baselines"] = dict(problems.get(case["pair_key"], {}).get("baselines", {}))
    meta = next((a for a in arms if a.label == "meta"), None)
    sizes = sorted({r.size for r in config.runs})
    try:
        resolved_device = str(resolve_device(device))
    except MetadipError:
        resolved_device = str(device)
    config_record = {
        "name": config.name,
        "description": config.description,
        "command": " ".join(_quote(a) for a in command_line(config, out)),
        "options": config.to_dict(),
        "arms": [a.label for a in arms],
        "meta_init_by_setting": {
            setting_label(c): {"name": c["init_name"], "sha256": c["init_sha256"]} for c in cases if c["init"] == "meta"
        },
        "init": {
            "requested": config.init,
            "name": meta.name if meta else "random",
            "sha256": meta.sha256 if meta else None,
            "card": meta.card if meta else None,
            "arch": (meta or arms[0]).arch_config,
            "recipe": meta.inner if meta else None,
            "held_out_images": _training_images(meta)[1] if meta else None,
        },
        "random": {
            "recipe": next((a.inner for a in arms if a.label == "random"), None),
            "arch": next((a.arch_config.get("name") for a in arms if a.label == "random"), None),
            "arch_config": next((a.arch_config for a in arms if a.label == "random"), None),
        },
        "seeds": sorted({c["seed"] for c in cases}),
        "sizes": sizes,
        "iterations": sorted({r.iterations for r in config.runs}),
        "operators": list(dict.fromkeys(op for r in config.runs for op in r.operators)),
        "images": list(dict.fromkeys(c["image"] for c in cases)),
        "stop_rule": config.stop,
        "margin_db": config.margin_db,
        "bands": config.bands,
        "device": resolved_device,
        "threads": int(threads or torch.get_num_threads()),
        "jobs": int(jobs),
        "versions": _versions(),
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "notes": list(notes),
    }
    return {
        "cases": cases,
        "summary": build_summary(cases, config.margin_db),
        "config": config_record,
        "problems": list(problems.values()),
    }


def _quote(arg: str) -> str:
    import shlex

    return shlex.quote(str(arg))


def results_csv(results: dict) -> str:
    """One row per case (no per-iteration lists); baseline PSNRs as ``baseline_<name>`` columns."""
    baseline_names = sorted({n for c in results["cases"] for n in (c.get("baselines") or {})})
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([*CSV_COLUMNS, *(f"baseline_{n}" for n in baseline_names)])
    for case in results["cases"]:
        row = ["" if case.get(k) is None else case.get(k) for k in CSV_COLUMNS]
        row += ["" if (case.get("baselines") or {}).get(n) is None else case["baselines"][n] for n in baseline_names]
        writer.writerow(row)
    return buffer.getvalue()


def dump_results(results: dict) -> str:
    """results.json text: ``summary`` and ``config`` indented, one line per case / problem (compact curves keep
    the file small and its diffs readable)."""

    def compact(value: Any) -> str:
        return json.dumps(value, separators=(",", ":"), allow_nan=False, default=_json_default)

    parts = []
    for key, value in results.items():
        if key.startswith("_"):
            continue
        if key in ("cases", "problems") and isinstance(value, list):
            body = "[]" if not value else "[\n  " + ",\n  ".join(compact(v) for v in value) + "\n ]"
        else:
            body = json.dumps(value, indent=1, allow_nan=False, default=_json_default).replace("\n", "\n ")
        parts.append(f" {json.dumps(key)}: {body}")
    return "{\n" + ",\n".join(parts) + "\n}\n"


def write_results(out: str | Path, results: dict, config: EvalConfig) -> list[Path]:
    out = Path(out)
    paths = [out / "results.json", out / "results.csv", out / "config.toml"]
    atomic_write_text(paths[0], dump_results(results))
    atomic_write_text(paths[1], results_csv(results))
    header = (
        f"metadip evaluate config (re-run: metadip evaluate --config {paths[2]} --out {out})\n"
        f"written {results['config']['date']}"
    )
    atomic_write_text(paths[2], config.to_toml(header))
    return paths


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def load_results(path: str | Path) -> dict:
    path = Path(path)
    if path.is_dir():
        path = path / "results.json"
    data = _read_json(path)
    if data is None or "cases" not in data:
        raise MetadipError(f"{path} is not a metadip results.json")
    return data


# ------------------------------------------------------------------------------------------------------ entry


def evaluate(
    config: EvalConfig,
    out: str | Path,
    *,
    device: str = "auto",
    tensorboard: str | Path | None = None,
    progress: bool = True,
    report: bool = True,
    echo: Callable[[str], None] | None = None,
    jobs: int = 1,
    threads: int | None = None,
) -> dict:
    """Run ``config`` into ``out`` (resuming finished cases) and write results.json / results.csv /
    config.toml and, with ``report``, the figures and report.md. ``jobs`` / ``threads``: see
    :func:`parallelism`. Returns the results object with an extra ``_counts`` entry {"run", "skipped",
    "jobs", "threads"} (not written)."""
    echo = echo or (lambda message: print(message, file=sys.stderr))
    arms, notes = resolve_arms(config)
    for note in notes:
        echo(note)
    records, problem_records, arms, counts = run_cases(
        config,
        out,
        device=device,
        tensorboard=tensorboard,
        progress=progress,
        echo=echo,
        arms=arms,
        jobs=jobs,
        threads=threads,
    )
    results = assemble(
        config,
        records,
        problem_records,
        arms,
        out=out,
        device=device,
        notes=notes,
        jobs=counts["jobs"],
        threads=counts["threads"],
    )
    write_results(out, results, config)
    if report:
        from metadip.report import build_report

        build_report(out, results)
    results["_counts"] = counts
    return results


def with_overrides(config: EvalConfig, **changes: Any) -> EvalConfig:
    """``config`` with top-level fields replaced (None values ignored)."""
    return replace(config, **{k: v for k, v in changes.items() if v is not None})
