"""The recipe ``metadip pretrain --images DIR --operator SPEC ...`` trains (:func:`images_recipe`): a shipped
init's recorded recipe (:func:`init_recipe`) retargeted at a folder of pictures and a list of operator families."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from metadip import checkpoint as ckpt
from metadip.conditioning import conditioned_channels
from metadip.errors import MetadipError
from metadip.images import check_picture_sizes, scan_folder, seeded_held_out, split_images
from metadip.pretrain.config import DataConfig, ModelConfig, PretrainConfig
from metadip.task_ranges import distribution_for_operators
from metadip.tasks import make_generator

#: ``--arch`` of a from-scratch ``--images`` recipe: ``skip-slim`` / ``skip`` (the generator presets) or ``tiny``,
#: a 2-scale × 4-channel skip net that trains in seconds — for smoke tests, not a useful initialisation.
SCRATCH_ARCHS: dict[str, tuple[str, dict[str, Any]]] = {
    "skip-slim": ("skip-slim", {}),
    "skip": ("skip", {}),
    "tiny": ("skip", {"num_scales": 2, "channels_down": [4, 4], "channels_up": [4, 4], "channels_skip": [2, 2]}),
}
SCRATCH = "scratch"  # --from scratch: random θ0 (the default init's recipe otherwise)


def init_recipe(name_or_path: str) -> tuple[PretrainConfig, str, int]:
    """(recipe, name as ``model.init_from`` takes it, channels) of a checkpoint: the training config its sidecar
    records (``training.config``), so it works from a wheel install without the ``pretrain/`` folder. A bare
    name stays a name; a path becomes absolute."""
    raw = str(name_or_path).strip()
    try:
        init = ckpt.load_checkpoint(raw)
    except MetadipError as exc:
        raise MetadipError(f"--from: {exc}") from None
    recorded = (init.training or {}).get("config")
    if not isinstance(recorded, Mapping):
        raise MetadipError(f"--from {raw}: its sidecar records no training recipe (training.config); use --config")
    try:
        recipe = PretrainConfig.from_dict(recorded)
    except MetadipError as exc:
        raise MetadipError(f"--from {raw}: its recorded training recipe no longer parses: {exc}") from None
    looks_like_path = "/" in raw or os.sep in raw or raw.endswith((".json", ".safetensors"))
    reference = str(ckpt.resolve_checkpoint(raw).resolve().with_suffix("")) if looks_like_path else raw
    return recipe, reference, int(init.arch_config.get("out_channels", recipe.tasks.channels))


def _folder_name(root: Path) -> str:
    name = "".join(c if c.isalnum() or c in "-_." else "-" for c in root.name).strip("-.")
    return name or "images"


def images_recipe(
    folder: str | os.PathLike,
    operators: list[str] | tuple[str, ...],
    *,
    init: str | None = None,
    name: str | None = None,
    held_out: int | None = None,
    size: int | None = None,
    arch: str | None = None,
    steps: int | None = None,
    max_minutes: float | None = None,
) -> PretrainConfig:
    """The recipe ``metadip pretrain --images DIR --operator SPEC ...`` trains (see :mod:`metadip.cli_pretrain`).

    Starts from the recipe recorded by init ``init`` (default: the one ``--init auto`` picks for the folder's
    channel count, e.g. ``universal-slim-long`` for colour pictures) with ``model.init_from = init`` (a
    fine-tune), or with random θ0 for ``init = "scratch"``: then the recipe is the one that trained the default
    init's lineage from random weights (``universal-slim`` for colour; followed through ``model.init_from``) and
    ``arch`` may pick a preset of :data:`SCRATCH_ARCHS`. ``data.source`` = the folder (absolute),
    ``data.held_out`` = ``held_out`` pictures (default max(1, 10 %)) chosen by a permutation of the sorted names
    drawn from the recipe's seed (:func:`metadip.images.seeded_held_out`); ``tasks`` = the operator specs and
    their ranges (:func:`metadip.task_ranges.distribution_for_operators`), the folder's channel count and ``size``
    (crop size).
    The schedule horizons are left unset (they follow ``steps``; a resumed run keeps its own);
    ``recommended_for`` / ``avoid_for`` are cleared (they only steer ``--init auto`` among installed inits);
    ``export`` is off (the init is written into the run folder).

    An RGB measurement-conditioned init fine-tunes on grey pictures through :mod:`metadip.meta.grey`; a grey init
    cannot learn colour. Folder problems (empty, no pictures, grey and colour mixed, too few pictures for the
    split, pictures smaller than the crops) are one-line :class:`MetadipError` s."""
    root = Path(folder).expanduser().resolve()
    pictures = scan_folder(root)
    channels = 1 if pictures[0].channels == 1 else 3
    kind = "grey" if channels == 1 else "colour"
    scratch = init is not None and init.strip().lower() == SCRATCH
    if arch is not None and not scratch:
        raise MetadipError("--arch applies only with --from scratch (a fine-tune keeps its init's architecture)")
    if init is None or scratch:
        default = ckpt.shipped_init_for(channels)
        if default is None:
            raise MetadipError(f"no installed init for {kind} pictures to take the recipe from; use --config")
        init = default
    base, reference, init_channels = init_recipe(init)
    for _ in range(8) if scratch else ():  # the recipe that trained the default's lineage from random weights
        if not base.model.init_from:
            break
        base, _, init_channels = init_recipe(base.model.init_from)
    if channels == 3 and init_channels != 3 and not scratch:
        raise MetadipError(
            f"--from {init}: a {init_channels}-channel init cannot learn the colour pictures of {root}; "
            "use an RGB init or --from scratch"
        )
    in_channels = None
    if channels != init_channels and base.input.z_mode == "conditioned":  # z holds the pictures' channels
        in_channels = conditioned_channels(channels, base.input.noise_channels)
    elif channels != init_channels and not scratch:
        raise MetadipError(
            f"--from {init}: only a measurement-conditioned RGB init converts to grey; {root} holds grey pictures"
        )
    model = dataclasses.replace(base.model, init_from=None if scratch else reference)
    if scratch and arch is not None:
        if arch not in SCRATCH_ARCHS:
            raise MetadipError(f"--arch {arch!r} is not one of {', '.join(SCRATCH_ARCHS)}")
        preset, options = SCRATCH_ARCHS[arch]
        kept = {k: v for k, v in base.model.options.items() if k in ("residual", "offset", "in_channels")}
        model = ModelConfig(arch=preset, options={**options, **kept}, init_from=None)
    if in_channels is not None:
        model = dataclasses.replace(model, options={**model.options, "in_channels": in_channels})

    tasks = distribution_for_operators(base.tasks, list(operators))
    tasks = dataclasses.replace(tasks, channels=channels, sizes=(size,) if size is not None else tasks.sizes)
    names = [p.name for p in pictures]
    count = max(1, len(names) // 10) if held_out is None else int(held_out)
    try:
        held = seeded_held_out(names, count, make_generator(base.seed, "held-out"))
    except MetadipError as exc:
        raise MetadipError(f"{root}: {exc}; add pictures or lower --held-out") from None
    _, held = split_images(names, held)  # exactly what the loop holds out (a file name also matches sub/NAME)
    if len(held) == len(names):
        raise MetadipError(f"{root}: holding out {', '.join(held)} leaves no picture for training")
    check_picture_sizes(root, pictures, max(tasks.sizes), base.data.max_side)
    start = "trained from scratch" if scratch else f"fine-tuned from {init}"
    config = dataclasses.replace(
        base,
        name=name if name is not None else _folder_name(root),
        description=f"{start} on the {kind} pictures of {root} ({', '.join(operators)}; "
        f"{len(names) - len(held)} for training, {len(held)} held out)",
        steps=base.steps if steps is None else int(steps),
        export=False,
        threads=None,
        max_minutes=max_minutes,
        recommended_for=(),
        avoid_for=(),
        model=model,
        data=DataConfig(source=str(root), held_out=tuple(held), train=None, max_side=base.data.max_side),
        tasks=tasks,
        maml=dataclasses.replace(base.maml, schedule_steps=None),
        reptile=dataclasses.replace(base.reptile, anneal_steps=None),
    )
    return config
