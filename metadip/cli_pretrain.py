"""The meta-learning commands, registered on the ``metadip`` group by :mod:`metadip.cli`:

``metadip pretrain --config pretrain/NAME.toml [--out runs/NAME] [--resume] [--device auto|cpu|cuda]
[--steps N] [--export] [--no-progress]`` and ``metadip checkpoints``. Works the same under
``torchrun --nproc_per_node=N -m metadip pretrain ...`` (rank 0 prints and writes)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import click

from metadip.errors import MetadipError


@click.command("pretrain")
@click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Meta-training recipe (TOML), e.g. pretrain/universal-slim.toml.",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Output folder (state, logs, TensorBoard, exported init). Default: runs/NAME.",
)
@click.option(
    "--resume",
    is_flag=True,
    help="Continue the run in --out from its state.pt (same result as an uninterrupted run).",
)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--steps", type=click.IntRange(min=0), default=None, help="Override the number of meta-steps.")
@click.option(
    "--export/--no-export",
    "export",
    default=None,
    help="Also write NAME.* to the first $METADIP_CHECKPOINTS folder (else metadip/checkpoints/) when training "
    "finishes (default: the config's 'export').",
)
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show the tqdm progress bar.")
def pretrain(
    config_path: Path,
    out_dir: Path | None,
    resume: bool,
    device: str,
    steps: int | None,
    export: bool | None,
    progress: bool,
) -> None:
    """Meta-train a DIP initialisation from a TOML recipe (MAML, first-order MAML, Meta-SGD or Reptile)."""
    from metadip import distributed
    from metadip.pretrain import PretrainConfig, run_pretrain

    config = PretrainConfig.from_toml(config_path)
    if steps is not None:
        config = dataclasses.replace(config, steps=steps)
    out = out_dir if out_dir is not None else Path("runs") / config.name
    if out.exists() and not out.is_dir():
        raise MetadipError(f"--out {out} exists and is not a directory")
    try:
        result = run_pretrain(config, out, resume=resume, device=device, progress=progress, export=export)
    finally:
        if distributed.env_world_size() > 1:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
    if result.checkpoint is None:
        return
    lines = [
        f"trained {config.name}: {result.step} meta-steps in {result.wall_seconds / 60:.1f} min",
        f"checkpoint: {result.checkpoint.with_suffix('')}.{{safetensors,json}}",
    ]
    if result.exported is not None:
        lines.append(f"exported: {result.exported.with_suffix('')}.{{safetensors,json}}")
    val = result.validation
    if val:
        keys = [k for k in sorted(val) if k.count("/") == 1]
        lines.append("validation PSNR (dB): " + ", ".join(f"{k[4:]}={val[k]:.2f}" for k in keys))
    click.echo("\n".join(lines))


@click.command("checkpoints")
def checkpoints() -> None:
    """List the initialisations that ship with metadip (and those in $METADIP_CHECKPOINTS), then what
    ``--init auto`` picks for RGB and for grey images of each operator family with its default parameters."""
    import torch

    from metadip.checkpoint import ENV_VAR, checkpoint_dirs, list_checkpoints, shipped_init_for
    from metadip.errors import MetadipError
    from metadip.operators import OPERATORS, build_operator

    found = list_checkpoints()
    if not found:  # a broken install: --init auto would silently fall back to random init everywhere
        raise MetadipError(
            "no checkpoints found in " + ", ".join(str(d) for d in checkpoint_dirs())
            + f" (reinstall metadip, or point ${ENV_VAR} at a folder of NAME.json + NAME.safetensors)"
        )
    width = max(len(name) for name, _ in found)
    for name, card in found:
        click.echo(f"{name:<{width}}  {card}")
    for channels, label in ((3, "RGB"), (1, "grey")):
        picks = []
        for family in OPERATORS:
            # the family with its defaults written out (seeded: drawing a Fourier mask leaves the global RNG alone)
            op = build_operator(family, (channels, 64, 64), generator=torch.Generator().manual_seed(0))
            picks.append(f"{op.spec()} → {shipped_init_for(channels, operator=op) or 'random'}")
        click.echo(f"--init auto ({label}, default parameters): " + "; ".join(picks))
