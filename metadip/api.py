"""Python API: ``metadip.reconstruct(y, operator, init=...)``. The CLI is a thin layer over this."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from metadip import checkpoint, dip, metrics
from metadip.conditioning import conditioned_channels, make_conditioned_input
from metadip.errors import MetadipError
from metadip.generators import DEFAULT_ARCH, build_generator, make_input
from metadip.operators import LinearOperator
from metadip.runtime import check_seed, configure_threads, resolve_device
from metadip.tracking import TensorBoardLogger

HOLDOUT_FRACTION = 0.1  # share of the measurements the hold-out stopping rule keeps out of the loss


@dataclass
class ReconstructionResult:
    """The reconstruction, its per-iteration history, and how the run ended."""

    image: torch.Tensor
    history: dict[str, list[float]]
    stop_iteration: int
    stop_reason: str
    seconds: float
    init: str
    arch: str
    operator: str
    psnr: float | None = None
    ssim: float | None = None
    extras: dict = field(default_factory=dict)
    setup_seconds: float = 0.0  # building the network and z (a classical estimate in z costs here); in ``seconds``

    def summary(self, *, psnr_unit: str = "dB") -> str:
        """``iterations=N stop=REASON [psnr=P<psnr_unit> ssim=S] seconds=T init=NAME`` (NAME: the init actually
        used, which ``init="auto"`` chose). The command line prints it with ``psnr_unit=""``."""
        parts = [f"iterations={self.stop_iteration}", f"stop={self.stop_reason}"]
        if self.psnr is not None:
            parts.append(f"psnr={self.psnr:.2f}{psnr_unit}")
        if self.ssim is not None:
            parts.append(f"ssim={self.ssim:.4f}")
        parts.append(f"seconds={self.seconds:.1f}")
        parts.append(f"init={self.init}")
        return " ".join(parts)

    def to_json(self) -> dict:
        data: dict = {
            "loss": self.history.get("loss", []),
            "stop_iteration": self.stop_iteration,
            "stop_reason": self.stop_reason,
            "seconds": self.seconds,
            "init": self.init,
            "arch": self.arch,
            "operator": self.operator,
        }
        for key in ("psnr", "ssim", "holdout_loss"):
            if key in self.history:
                data[key] = self.history[key]
        if self.psnr is not None:
            data["final_psnr"] = self.psnr
            data["final_ssim"] = self.ssim
        for key, value in self.extras.items():
            if key == "monitor":
                value = {k: v for k, v in value.items() if k != "image"}
            data[key] = value
        return data


def resolve_init_name(init: str | Path, *, arch: str | None, out_channels: int, operator=None) -> str | Path:
    """``auto`` → the shipped init for ``out_channels``-channel images (and ``arch`` and ``operator``, if given:
    an init recommended for that operator wins), else ``random``; any other value unchanged."""
    if str(init) != "auto":
        return init
    return checkpoint.shipped_init_for(out_channels, arch, operator) or "random"


def load_init(init: str | Path, *, arch: str | None, out_channels: int, seed: int, operator=None):
    """Resolve ``init`` (``auto``, ``random``, a shipped checkpoint name, or a path) to an ``Init``; with
    ``operator`` (a built operator), ``auto`` may pick an init recommended for it."""
    if str(init) == "auto":  # loaded once here, not looked up by name and loaded again
        loaded = checkpoint.find_shipped_init(out_channels, arch, operator)
        if loaded is not None:
            return loaded
        init = "random"
    if str(init) == "random":
        return checkpoint.random_init(arch or DEFAULT_ARCH, out_channels=out_channels, seed=seed)
    loaded = checkpoint.load_checkpoint(init)
    trained_for = int(loaded.arch_config.get("out_channels", out_channels))
    if trained_for != out_channels:
        fits = checkpoint.shipped_init_for(out_channels, arch, operator)
        hint = f"--init auto (here: {fits})" if fits else "--init random"
        raise MetadipError(
            f"initialisation {loaded.name!r} is for {trained_for}-channel images, this image has {out_channels}; "
            f"use {hint} or an init for {out_channels}-channel images"
        )
    if arch is not None and arch != loaded.arch_config.get("name"):
        raise MetadipError(
            f"--arch {arch} does not match the checkpoint's architecture {loaded.arch_config.get('name')!r}; "
            "drop --arch or use --init random"
        )
    return loaded


def prepare(
    init_state, op, device: torch.device, y: torch.Tensor | None = None, weight: torch.Tensor | None = None
) -> tuple[torch.nn.Module, torch.Tensor]:
    """Build the generator holding the init's weights and its input z for ``op``'s image size (and, for a
    measurement-conditioned recipe, for ``y`` with the entries where ``weight`` is 0 hidden)."""
    channels, height, width = op.image_shape
    net = build_generator(init_state.arch_config, out_channels=channels)
    try:
        net.load_state_dict(init_state.state_dict, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise MetadipError(f"initialisation {init_state.name!r} does not fit this architecture: {first}") from None
    net = net.to(device)
    if getattr(init_state, "z_mode", "resample") == "conditioned":
        if y is None:
            raise MetadipError(f"initialisation {init_state.name!r} builds its input from the measurement; pass y")
        noise_channels = int(net.config["in_channels"]) - conditioned_channels(channels, 0)
        z = make_conditioned_input(init_state.input_recipe, op.to(device), y.to(device), noise_channels, weight=weight)
    elif init_state.z is not None:
        z = init_state.z
        expected = net.input_shape(height, width)
        if tuple(z.shape[-3:]) != tuple(expected):
            siblings = checkpoint.fixed_input_inits(expected, channels)
            hint = f"; inits stored for {height}×{width} pictures: {', '.join(siblings)}" if siblings else ""
            raise MetadipError(
                f"initialisation {init_state.name!r} stores a fixed input of shape {tuple(z.shape[-3:])} but this "
                f"image needs {tuple(expected)}{hint}"
            )
        z = z.to(device)
    else:
        z = make_input(init_state.input_recipe, net.input_shape(height, width), device=device)
    return net, z


def input_builder(init_state, op, weight: torch.Tensor | None, seed: int, in_channels: int):
    """For a measurement-conditioned init: y′ ↦ its z′ (same noise channels as the run's z, drawn from
    ``seed`` as :func:`prepare` draws them), so a SURE loss can probe the network through its input; None for
    other inits. ``in_channels``: the network's input width."""
    if getattr(init_state, "z_mode", "resample") != "conditioned":
        return None
    recipe = init_state.input_recipe
    noise_channels = in_channels - conditioned_channels(op.image_shape[0], 0)

    def build(measurement: torch.Tensor) -> torch.Tensor:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return make_conditioned_input(recipe, op, measurement, noise_channels, weight=weight)

    return build


def _check_range(y: torch.Tensor, operator) -> None:
    """Refuse a real measurement far outside the [0, 1] scale (e.g. 8-bit values): A x lies in [0, 1] for
    every real operator, so anything beyond it by more than six noise deviations is on another scale."""
    sigma = getattr(operator, "sigma", 0.0) / 255.0
    peak = getattr(operator, "poisson", None)
    spread = 6 * sigma + (6 / math.sqrt(peak) + 6 / peak if peak else 0.0)
    low, high = float(y.min()), float(y.max())
    if low < -1.0 - spread or high > 2.0 + spread:
        raise MetadipError(
            f"the measurement's values span [{low:.4g}, {high:.4g}]; metadip works on the [0, 1] scale "
            "(8-bit data: divide by 255)"
        )


def _check_arguments(y, operator, reference, *, iterations, lr, seed) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Validate :func:`reconstruct`'s arguments (one line :class:`MetadipError` each); ``y`` as 1×C×H×W float32
    (complex64 for a complex operator) and ``reference`` as 1×C×H×W float32."""
    if not isinstance(operator, LinearOperator):
        raise MetadipError(
            f"operator must be a metadip operator (metadip.operators.build_operator), got {type(operator).__name__}"
        )
    if not isinstance(y, torch.Tensor):
        raise MetadipError(f"the measurement must be a torch.Tensor (C×H×W or 1×C×H×W), got {type(y).__name__}")
    y = y.detach()
    if y.dim() == 3:
        y = y.unsqueeze(0)
    if y.dim() != 4 or y.shape[0] != 1:
        raise MetadipError(
            f"the measurement must be C×H×W or 1×C×H×W (one image per call), got shape {tuple(y.shape)}"
        )
    if not (y.is_floating_point() or y.is_complex()):
        raise MetadipError(
            f"the measurement has dtype {y.dtype}; give floats on the [0, 1] scale (e.g. uint8 data / 255)"
        )
    if not torch.isfinite(torch.view_as_real(y) if y.is_complex() else y).all():
        raise MetadipError("the measurement contains NaN or Inf values")
    expected = tuple(operator.measurement_shape)
    if tuple(y.shape[1:]) != expected:
        raise MetadipError(
            f"the measurement has shape {tuple(y.shape[1:])} but operator {operator.spec()} expects {expected}"
        )
    if y.is_complex() and not operator.is_complex:
        raise MetadipError(f"the measurement is complex but operator {operator.name} expects a real one")
    y = y.to(torch.complex64) if operator.is_complex else y.to(torch.float32)
    if not operator.is_complex:
        _check_range(y, operator)
    if reference is not None:
        if not isinstance(reference, torch.Tensor) or not reference.is_floating_point():
            raise MetadipError("reference must be a float torch.Tensor (C×H×W or 1×C×H×W) in [0, 1]")
        reference = reference.detach()
        if reference.dim() == 3:
            reference = reference.unsqueeze(0)
        if reference.dim() != 4 or reference.shape[0] != 1 or tuple(reference.shape[1:]) != tuple(
            operator.image_shape
        ):
            raise MetadipError(
                f"reference image has shape {tuple(reference.shape[1:])}, expected {tuple(operator.image_shape)}"
            )
        if not torch.isfinite(reference).all():
            raise MetadipError("the reference image contains NaN or Inf values")
        reference = reference.to(torch.float32)
    if iterations is not None and (isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1):
        raise MetadipError(f"iterations must be a positive integer, got {iterations!r}")
    bad_lr = isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0
    if lr is not None and bad_lr:
        raise MetadipError(f"lr must be a finite number > 0, got {lr!r}")
    check_seed(seed)
    return y, reference


def reconstruct(
    y: torch.Tensor,
    operator,
    *,
    init: str | Path = "auto",
    arch: str | None = None,
    iterations: int | None = None,
    stop: str | None = None,
    seed: int = 0,
    device: str | torch.device = "auto",
    reference: torch.Tensor | None = None,
    lr: float | None = None,
    progress: bool = False,
    tensorboard: str | Path | None = None,
    callback=None,
    monitor: str | None = None,
    ssim_every: int = 1,
    loss: str | None = None,
) -> ReconstructionResult:
    """Reconstruct an image from measurement ``y`` of ``operator`` with DIP from ``init``.

    ``init`` is ``"auto"`` (default: the shipped init recommended for this operator, else the universal
    one, when one fits the image's channels and ``arch``; else random), ``"random"`` (the DIP paper's recipe), a
    shipped checkpoint name, or a checkpoint path; the init's own recipe (z, optimiser, lr, jitter, EMA, iteration
    budget, stopping rule) is used unless overridden.
    """
    y, reference = _check_arguments(y, operator, reference, iterations=iterations, lr=lr, seed=seed)
    device = resolve_device(device)
    if device.type == "cpu":
        configure_threads()
    channels = operator.image_shape[0]
    init_state = load_init(init, arch=arch, out_channels=channels, seed=seed, operator=operator)
    recipe = init_state.recipe.override(iterations=iterations, lr=lr, loss=loss)
    op = operator.to(device)
    y = y.to(device)
    generator = torch.Generator().manual_seed(seed)
    stop_rule = recipe.stopping_rule(stop)
    if monitor is not None and isinstance(monitor, str):
        monitor = recipe.stopping_rule(monitor)
    # Draw the hold-out split first, so a measurement-conditioned z is built without the held-out entries.
    wants_holdout = stop_rule.needs_holdout or getattr(monitor, "needs_holdout", False)
    holdout_weights = dip.holdout_split(op, y, HOLDOUT_FRACTION, generator) if wants_holdout else None
    train_weight = holdout_weights[0] if holdout_weights else None
    started = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net, z = prepare(init_state, op, device, y, weight=train_weight)
    setup_seconds = time.perf_counter() - started
    if reference is not None:
        reference = reference.to(device=device, dtype=torch.float32)
    sure = recipe.loss == "sure"
    logger = None
    if tensorboard is not None:
        logger = TensorBoardLogger(tensorboard)
    try:
        result = dip.fit(
            net,
            z,
            y,
            op,
            recipe,
            stop=stop_rule,
            sigma=getattr(op, "sigma", 0.0) / 255.0 or None,
            reference=reference,
            generator=generator,
            progress=progress,
            logger=logger,
            callback=callback,
            monitor=monitor,
            holdout_weights=holdout_weights,
            ssim_every=ssim_every,
            input_builder=input_builder(init_state, op, train_weight, seed, int(net.config["in_channels"]))
            if sure
            else None,
        )
    finally:
        if logger is not None:
            logger.close()
    image = result.image.cpu()
    psnr = ssim = None
    if reference is not None:
        psnr = metrics.psnr(image, reference.cpu())
        ssim = metrics.ssim(image, reference.cpu())
    return ReconstructionResult(
        image=image,
        history=result.history,
        stop_iteration=result.stop_iteration,
        stop_reason=result.stop_reason,
        seconds=result.seconds + setup_seconds,
        setup_seconds=setup_seconds,
        init=init_state.name,
        arch=str(init_state.arch_config.get("name", "custom")),
        operator=operator.spec(),
        psnr=psnr,
        ssim=ssim,
        extras={
            "output_iteration": result.extras.get("output_iteration"),
            "rollbacks": result.rollbacks,
            **({"monitor": result.extras["monitor"]} if "monitor" in result.extras else {}),
        },
    )
