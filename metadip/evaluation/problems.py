"""The problems of a suite: images (``held-out``, a folder, sample names, held-out phantoms ``phantom-K``) loaded
as clean pictures, the measurement of each (image, operator, seed) drawn from one seeded generator, and the
cache keys of a problem (:func:`_pair_key`) and of one arm on it (:func:`arm_key`)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from metadip import images as image_sources
from metadip.checkpoint import shipped_init_for_spec
from metadip.errors import MetadipError
from metadip.evaluation.arms import Arm, _short_hash, meta_arm
from metadip.evaluation.suite import EvalConfig
from metadip.imageio import SAMPLE_IMAGES, load_image_source, to_channels
from metadip.operators import OPERATORS, build_operator, parse_operator_spec, simulate
from metadip.phantoms import evaluation_phase, held_out_index, held_out_phantom

CASE_FORMAT = 1


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


# ----------------------------------------------------------------------------------------------- measurements


def measurement_seed(seed: int, image: str, operator: str) -> int:
    """The generator seed of one measurement: a hash of (seed, image, operator), reproducible everywhere."""
    digest = hashlib.sha256(f"{int(seed)}|{image}|{operator}".encode()).digest()
    return int.from_bytes(digest[:7], "big")


def make_problem(x: torch.Tensor, operator: str, seed: int, image: str):
    """(op, y): the operator (random parts drawn) and the measurement, from one seeded generator."""
    generator = torch.Generator().manual_seed(measurement_seed(seed, image, operator))
    op = build_operator(operator, tuple(x.shape[1:]), generator=generator)
    y = simulate(x, op, generator)
    return op, y


def coverage(operator: str, training: dict) -> str | None:
    """Whether ``operator`` was inside the init's meta-training distribution: ``"seen"``, ``"unseen family"``
    or ``"unseen <key>"`` (a parameter outside the trained range, or ``poisson`` noise, which meta-training never
    draws); None when the checkpoint does not say."""
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
        return params.get(key, OPERATORS[family].keys()[key].default)

    if params.get("poisson") is not None:  # meta-training draws Gaussian noise only (metadip.tasks)
        return "unseen poisson"
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


# ------------------------------------------------------------------------------------------------------- keys


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
    return _short_hash({**arm_key_fields(problem, arm, stop, bands, mode), "recipe": _short_hash(_recipe_for_key(arm))})


def arm_key_fields(problem: Problem, arm: Arm, stop: str, bands: int, mode: dict | None = None) -> dict:
    """What the cache key holds besides the arm's online recipe: the problem, the weights, the budget, the rules."""
    return {
        "pair": problem.pair_key,
        "init": arm.label,
        "init_sha256": arm.sha256,
        "arch": _short_hash(arm.arch_config),
        "iterations": int(problem.iterations),
        "stop": stop,
        "bands": int(bands),
        "format": CASE_FORMAT,
        **(mode or {}),
    }


def _recipe_for_key(arm: Arm) -> dict:
    """The arm's online recipe as it shapes a run with the same weights — optimiser, lr(s), jitter, EMA, the stop
    rule the evaluation watches, adaptation mode, loss — for the cache key, so an edited sidecar (say, another EMA)
    never reuses the cases of the old one. The recipe's own iteration budget is not in it: the suite sets the cap.
    (Until the fourteenth session only ``adapt`` and ``loss`` were in the key.)"""
    recipe = {k: v for k, v in arm.inner.items() if k != "iterations"}
    for key, default in LEVER_DEFAULTS.items():  # older sidecars lack them: the same recipe
        recipe.setdefault(key, default)
    return recipe


#: Online levers added to sidecars over time, with the value a sidecar without them means.
LEVER_DEFAULTS = {"adapt": "all", "loss": "mse"}


# ------------------------------------------------------------------------------------------------------- plan


def plan(config: EvalConfig, arms: Sequence[Arm]) -> list[Problem]:
    """Every problem of ``config`` in run → image → operator → seed order (loads the clean images)."""
    meta = next((a for a in arms if a.label == "meta"), None)
    channels = arms[0].out_channels
    problems: list[Problem] = []
    seen_keys: set[str] = set()
    auto_arms: dict[str, Arm] = {}

    def own_arm(spec: str, size: int) -> Arm | str | None:
        """The per-operator ``--init auto`` arm when it differs from the suite's meta arm."""
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


def problem_arms(problem: Problem, arms: Sequence[Arm]) -> list[Arm]:
    """The arms of one problem: the suite's, with the meta arm replaced by the problem's own per-operator
    ``--init auto`` choice where it has one (dropped where auto picks random init)."""
    if problem.meta is None:
        return list(arms)
    if problem.meta == "random":
        return [a for a in arms if a.label != "meta"]
    return [problem.meta if a.label == "meta" else a for a in arms]
