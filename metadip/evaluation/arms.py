"""The two sides of the comparison: the meta arm of a checkpoint (``--init NAME``, or ``auto``: the shipped init
``metadip reconstruct --init auto`` picks) and the random arm (the same network as the DIP paper runs it, with
the DIP paper's recipe)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from metadip import checkpoint
from metadip.checkpoint import shipped_init_for, shipped_init_for_spec
from metadip.errors import MetadipError
from metadip.evaluation.suite import EvalConfig
from metadip.generators import DEFAULT_ARCH, PRESETS, build_generator
from metadip.online import PAPER


@dataclass
class Arm:
    """One side of the comparison: what to pass to :func:`metadip.api.reconstruct` and how to describe it."""

    label: str  # "meta" | "random"
    init: str  # api.reconstruct(init=...)
    arch: str | dict | None  # api.reconstruct(arch=...) (random arm only)
    name: str
    sha256: str
    arch_config: dict
    inner: dict  # the online recipe, as the sidecar stores it (DipRecipe.to_dict())
    card: str = ""
    training: dict = field(default_factory=dict)

    @property
    def out_channels(self) -> int:
        return int(self.arch_config.get("out_channels", 3))


def _short_hash(obj: Any, length: int = 16) -> str:
    text = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


#: Architecture options that only make sense with a measurement-conditioned z; the random arm drops them.
CONDITIONED_OPTIONS = ("residual", "offset")


def random_arch(meta_arch: dict) -> str | dict:
    """The random arm's architecture for a meta init's ``arch`` config: the same network as the DIP paper
    runs it — the preset by name when the config is a preset (plus its explicit overrides, minus the
    conditioned-input options and input width), else the config without the conditioned-input options."""
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
    picks: set[str | None] = set()
    for run in config.runs if config is not None else ():
        for spec in run.operators:
            picks.add(shipped_init_for_spec(spec, run.size, channels=None))
    if len(picks) == 1:
        return picks.pop(), False
    return shipped_init_for(None), len(picks) > 1


def meta_arm(init: str, arch: str | None = None) -> Arm:
    """The meta arm of checkpoint ``init`` (a name or path)."""
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
        inner=loaded.recipe.to_dict(),
        card=loaded.card,
        training=dict(loaded.training),
    )


def resolve_arms(config: EvalConfig) -> tuple[list[Arm], list[str]]:
    """The arms to run (random first) and notes for the user (e.g. "random arm only")."""
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
        recipe = PAPER.to_dict()
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
