"""The meta-learning commands, registered on the ``metadip`` group by :mod:`metadip.cli`:

``metadip pretrain --config pretrain/NAME.toml [--out runs/NAME] [--resume] [--device auto|cpu|cuda]
[--steps N] [--minutes M] [--export] [--no-progress]``, its folder form ``metadip pretrain --images DIR
--operator SPEC [--operator SPEC ...] [--from NAME|scratch] [--minutes M] [--held-out N] [--name NAME]
[--out RUN_DIR]`` (the recipe: :func:`metadip.pretrain.images_recipe`; a meta-vs-random table on the held-out
pictures at the end: :func:`held_out_table`) and ``metadip checkpoints``. Works the same under
``torchrun --nproc_per_node=N -m metadip pretrain ...`` (rank 0 prints and writes)."""

# Imports inside functions are deliberate: they keep `metadip --help` and CLI start-up fast.

from __future__ import annotations

import dataclasses
from pathlib import Path

import click

from metadip.errors import MetadipError


@click.command("pretrain")
@click.option(
    "--config",
    "config_path",
    default=None,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Meta-training recipe (TOML), e.g. pretrain/universal-slim.toml (or a run's recipe.toml).",
)
@click.option(
    "--images",
    "images_dir",
    default=None,
    type=click.Path(path_type=Path),
    help="Instead of --config: fine-tune on this folder of pictures (needs --operator).",
)
@click.option(
    "--operator",
    "operators",
    multiple=True,
    help="With --images, repeatable: a family and its parameter ranges, e.g. denoise:sigma=10..40, "
    "fourier:ratio=0.2..0.4, inpaint:ratio=0.3..0.7,holes=pixels|blocks, superres:factor=2|4.",
)
@click.option(
    "--from",
    "init_from",
    default=None,
    help="With --images: the init to fine-tune (shipped name or NAME.json path; default: the one --init auto "
    "picks for the folder's grey/colour pictures, e.g. universal-slim-long) or 'scratch' (random weights).",
)
@click.option(
    "--held-out",
    "held_out",
    type=click.IntRange(min=0),
    default=None,
    help="With --images: pictures held out of training (seeded random choice; default max(1, 10%)).",
)
@click.option("--name", default=None, help="With --images: the init's name (default: the folder's name).")
@click.option(
    "--size",
    type=click.IntRange(min=8),
    default=None,
    help="With --images: training crop size in px (default: the recipe's, 64 for the shipped inits).",
)
@click.option(
    "--arch",
    default=None,
    metavar="skip-slim|skip|tiny",
    help="With --images --from scratch: the generator (tiny: a seconds-long smoke-test net, not a useful init).",
)
@click.option(
    "--val-tasks",
    "val_tasks",
    type=click.IntRange(min=0),
    default=None,
    help="With --images: validation tasks on the held-out pictures during training (TensorBoard; default: the "
    "recipe's, 8; 0 = none, cheaper).",
)
@click.option(
    "--minutes",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Wall-clock budget: stop training after M minutes (resumed parts included) and export what is there.",
)
@click.option(
    "--table/--no-table",
    default=True,
    show_default=True,
    help="With --images: after training, compare the init with random init on the held-out pictures.",
)
@click.option(
    "--table-iterations",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    help="DIP iterations per arm of that table (a cheap check, not a converged comparison).",
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
    config_path: Path | None,
    images_dir: Path | None,
    operators: tuple[str, ...],
    init_from: str | None,
    held_out: int | None,
    name: str | None,
    size: int | None,
    arch: str | None,
    val_tasks: int | None,
    minutes: float | None,
    table: bool,
    table_iterations: int,
    out_dir: Path | None,
    resume: bool,
    device: str,
    steps: int | None,
    export: bool | None,
    progress: bool,
) -> None:
    """Meta-train a DIP initialisation from a TOML recipe (MAML, first-order MAML, Meta-SGD or Reptile), or
    fine-tune one on your own pictures:

    \b
      metadip pretrain --images DIR --operator SPEC [--operator SPEC ...] [--from NAME|scratch]
                       [--minutes M] [--held-out N] [--name NAME] [--out RUN_DIR]

    With --images the recipe is the one the --from init was trained with (read from its sidecar), fine-tuning
    it (model.init_from) on DIR's pictures and the listed operator families and ranges; a seeded random subset
    of DIR is held out. RUN_DIR gets recipe.toml (re-run with --config RUN_DIR/recipe.toml) and NAME.json +
    NAME.safetensors (use with: metadip reconstruct --init RUN_DIR/NAME.json). DIR must hold only grey or only
    colour pictures, none smaller than the crop size."""
    from metadip import distributed
    from metadip.pretrain import PretrainConfig, images_recipe, run_pretrain

    if (config_path is None) == (images_dir is None):
        raise click.UsageError("give either --config RECIPE.toml or --images DIR --operator SPEC")
    if config_path is not None:
        flags = {"--operator": operators, "--from": init_from, "--held-out": held_out is not None, "--name": name}
        flags |= {"--size": size, "--arch": arch, "--val-tasks": val_tasks is not None}
        given = [flag for flag, value in flags.items() if value]
        if given:
            raise click.UsageError(f"{', '.join(given)} appl{'ies' if len(given) == 1 else 'y'} only with --images")
        config = PretrainConfig.from_toml(config_path)
        if steps is not None:
            config = dataclasses.replace(config, steps=steps)
        if minutes is not None:
            config = dataclasses.replace(config, max_minutes=minutes)
    else:
        if not operators:
            raise click.UsageError("--images needs at least one --operator, e.g. --operator denoise:sigma=10..40")
        config = images_recipe(
            images_dir,
            list(operators),
            init=init_from,
            name=name,
            held_out=held_out,
            size=size,
            arch=arch,
            steps=steps,
            max_minutes=minutes,
        )
        if val_tasks is not None:
            config = dataclasses.replace(config, log=dataclasses.replace(config.log, val_tasks=val_tasks))
    out = out_dir if out_dir is not None else Path("runs") / config.name
    if out.exists() and not out.is_dir():
        raise MetadipError(f"--out {out} exists and is not a directory")
    if images_dir is not None and distributed.env_info().is_main:
        if (out / "state.pt").exists() and not resume:
            raise MetadipError(f"{out} already holds a training run (state.pt); use --resume or another --out")
        if not (resume and (out / "recipe.toml").exists()):  # a resumed run keeps the recipe it started with
            _write_recipe(out / "recipe.toml", config.resolved())
    try:
        result = run_pretrain(config, out, resume=resume, device=device, progress=progress, export=export)
    finally:
        if distributed.env_world_size() > 1:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
    if result.checkpoint is None:
        return
    how = f" (stopped on time: {config.max_minutes:g} min)" if result.stopped_on_time else ""
    lines = [
        f"trained {config.name}: {result.step} meta-steps in {result.wall_seconds / 60:.1f} min{how}",
        f"checkpoint: {result.checkpoint.with_suffix('')}.{{safetensors,json}}",
    ]
    if result.exported is not None:
        lines.append(f"exported: {result.exported.with_suffix('')}.{{safetensors,json}}")
    val = result.validation
    if val:
        keys = [k for k in sorted(val) if k.count("/") == 1]
        lines.append("validation PSNR (dB): " + ", ".join(f"{k[4:]}={val[k]:.2f}" for k in keys))
    if images_dir is not None:
        lines.append(f"recipe: {out / 'recipe.toml'} (metadip pretrain --config {out / 'recipe.toml'})")
        lines.append(f"use it: metadip reconstruct --init {result.checkpoint} ...")
    click.echo("\n".join(lines))
    if images_dir is not None and table and config.data.held_out:
        click.echo(held_out_table(config, result.checkpoint, iterations=table_iterations, device=device))


def _write_recipe(path: Path, config) -> None:
    from metadip.fileio import atomic_write_text
    from metadip.tasks import to_toml_text

    path.parent.mkdir(parents=True, exist_ok=True)
    header = (
        f"metadip pretrain recipe {config.name!r}, written by 'metadip pretrain --images' (resolved).\n"
        f"Re-run: metadip pretrain --config {path} --out OTHER_RUN_DIR"
    )
    atomic_write_text(path, to_toml_text(config.to_dict(), header=header))


#: Held-out pictures the end-of-run table checks (at most), to keep it cheap.
TABLE_PICTURES = 4


def held_out_table(config, checkpoint: Path, *, iterations: int, device: str = "auto") -> str:
    """A short meta-vs-random table: PSNR after ``iterations`` DIP iterations from the trained init and from
    random init (the DIP paper's recipe, same architecture) on a centre crop of up to :data:`TABLE_PICTURES`
    held-out pictures, for the middle task of each trained family (:meth:`TaskDistribution.middle_spec`).
    Random init is far from its peak this early: a quick sanity check, not a converged comparison."""
    from metadip import api
    from metadip.checkpoint import load_checkpoint
    from metadip.evaluation import make_problem, random_arch
    from metadip.imageio import center_square, read_image, resize, to_channels

    tasks = config.tasks
    size = max(tasks.sizes)
    arch = random_arch(load_checkpoint(checkpoint).arch_config)
    rows = []
    for picture in config.data.held_out[:TABLE_PICTURES]:
        image = read_image(Path(config.data.source) / picture, max_pixels=None, min_size=1)
        x = to_channels(resize(center_square(image), size), tasks.channels, picture)
        for family in tasks.families:
            spec = tasks.middle_spec(family)
            op, y = make_problem(x, spec, config.seed, picture)
            scores = []
            for init, init_arch in ((str(checkpoint), None), ("random", arch)):
                result = api.reconstruct(
                    y,
                    op,
                    init=init,
                    arch=init_arch,
                    iterations=iterations,
                    stop="budget",
                    seed=config.seed,
                    device=device,
                    reference=x,
                )
                scores.append(float(result.psnr))
            rows.append((picture, spec, *scores))
    width = max(len("picture"), *(len(r[0]) for r in rows))
    op_width = max(len("task"), *(len(r[1]) for r in rows))
    lines = [
        f"held-out check: PSNR (dB) after {iterations} DIP iterations ({size} px centre crops; random init is far "
        "from its peak this early — metadip evaluate compares to convergence)",
        f"{'picture':<{width}}  {'task':<{op_width}}  {'meta':>6}  {'random':>6}  {'Δ':>6}",
    ]
    for picture, spec, meta, rand in rows:
        lines.append(f"{picture:<{width}}  {spec:<{op_width}}  {meta:6.2f}  {rand:6.2f}  {meta - rand:+6.2f}")
    if len(config.data.held_out) > TABLE_PICTURES:
        lines.append(f"({len(config.data.held_out) - TABLE_PICTURES} more held-out pictures not shown)")
    return "\n".join(lines)


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
