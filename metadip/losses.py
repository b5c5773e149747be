"""Losses for the DIP loop that do not reward fitting the noise: Stein's unbiased risk estimate (SURE).

For Gaussian noise ``y = μ + n``, ``n ~ N(0, s² I)`` in ``R^N``, and a weakly differentiable estimate ``h(y)`` of
``μ``, Stein's lemma gives an unbiased estimate of the squared error that never looks at ``μ``::

    E ‖h(y) − μ‖² = E [ ‖h(y) − y‖² − N s² + 2 s² div h(y) ]

The divergence (the trace of ``∂h/∂y``) is estimated with one Monte-Carlo probe ``b ~ N(0, I)``:
``div h(y) ≈ bᵀ (h(y + ε b) − h(y)) / ε`` (Ramani, Blu & Unser, "Monte-Carlo SURE", IEEE TIP 2008), unbiased for
linear ``h`` and up to O(ε) otherwise. DIP-SURE (Jo, Chun & Choi, ICCV 2021) trains a DIP network with this loss;
its divergence is only informative when the network input depends on ``y`` (their input is ``y`` itself), so
:func:`sure_loss` takes a callable mapping a measurement ``y'`` to the network output and perturbs through it —
with a fixed ``z`` the divergence is 0 and SURE degenerates to the plain data fit minus ``σ²``.

**Other operators** (``y = A x + n``): the estimate is taken in measurement space, ``h(y) = A f(y)`` on the
measured entries, which makes it an unbiased estimate of ``‖A (f(y) − x)‖² / m`` (the error seen through ``A``)
for any linear ``A`` with white Gaussian noise on its ``m`` measured entries — exactly how
:func:`metadip.operators.simulate` makes measurements. For operators with orthonormal rows on the measured
entries (inpainting masks, partial orthonormal Fourier) this is the error of the projection of ``f(y) − x`` on
the row space of ``A``; it says nothing about the null space (the missing pixels, the unsampled frequencies), so
it is not an estimate of the image MSE there. For denoising (``A = I``) it is the image MSE. Complex
measurements (Fourier) are treated as pairs of real entries of variance ``σ²/2`` each (the convention of
:mod:`metadip.noise`) and the estimate is normalised per complex entry, matching
:func:`metadip.dip.measurement_loss`.

**Poisson noise** (PURE; Luisier, Vonesch, Blu & Unser, "Fast interscale wavelet denoising of Poisson-corrupted
images", Signal Processing 2010, and its Poisson–Gaussian form PG-URE, Luisier et al., IEEE TIP 2011): for
``y = Poisson(peak · μ) / peak + n`` (:func:`metadip.noise.add_noise`; ``α = 1 / peak``, ``n ~ N(0, s² I)``) the
variance of entry ``i`` is ``α μ_i + s²`` and ``E[α y_i + s²]`` equals it, so::

    E ‖h(y) − μ‖² ≈ E [ ‖h(y) − y‖² − Σ_i v_i + 2 Σ_i v_i ∂h_i/∂y_i ],   v_i = α y_i + s²

— Stein's identity for the Gaussian part and, for the Poisson part, Hudson's identity
``E[μ_i h_i(y)] = E[y_i h_i(y − α e_i)]`` with ``h_i(y − α e_i) ≈ h_i(y) − α ∂h_i/∂y_i`` (exact for ``h`` affine in
``y_i``; the first-order PURE used for networks, e.g. Le Montagner et al., ISBI 2014). The weighted divergence
``Σ v_i ∂h_i/∂y_i`` takes one probe as above (``bᵀ diag(v) (h(y + ε b) − h(y)) / ε``). With no Poisson part
(``v_i = s²``) this is SURE, term for term; :func:`sure_loss` picks the form from the operator's ``poisson``.
Poisson noise only exists on real measurements (complex ones are refused by the noise model).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from metadip.errors import MetadipError


def has_noise(op, sigma: float | None) -> bool:
    """Whether a measurement of ``op`` with Gaussian std ``sigma`` (or ``op``'s Poisson peak) is noisy, i.e. whether
    SURE / PURE differ from the plain data fit. The one rule of both DIP loops (online and meta inner loop)."""
    return bool(sigma) or getattr(op, "poisson", None) is not None


def default_epsilon(y: torch.Tensor) -> float:
    """Finite-difference step of the divergence probe: ``1e-3 · max|y|`` (at least 1e-5), the heuristic of
    Metzler et al. (2018) for SURE-trained networks."""
    return max(1e-3 * float(y.detach().abs().max()), 1e-5)


def _probe(y: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A standard normal probe shaped like ``y`` (complex: real and imaginary parts each N(0, 1)), drawn on the
    generator's device."""
    device = generator.device
    real_dtype = y.real.dtype if y.is_complex() else y.dtype
    b = torch.randn(y.shape, generator=generator, device=device, dtype=real_dtype)
    if y.is_complex():
        b = torch.complex(b, torch.randn(y.shape, generator=generator, device=device, dtype=real_dtype))
    return b.to(y.device)


def _real_inner(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """⟨a, b⟩ over the real components (complex entries count as two real ones)."""
    return (a.conj() * b).real.sum() if a.is_complex() or b.is_complex() else (a * b).sum()


def mc_divergence(
    func: Callable[[torch.Tensor], torch.Tensor],
    y: torch.Tensor,
    generator: torch.Generator,
    *,
    epsilon: float | None = None,
    mask: torch.Tensor | None = None,
    value: torch.Tensor | None = None,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """One-probe Monte-Carlo estimate of ``div func(y)`` (sum over the real components of ``y``):
    ``bᵀ (func(y + ε b) − func(y)) / ε`` with ``b ~ N(0, I)`` drawn from ``generator``.

    ``mask`` (broadcastable to ``y``): only these entries are perturbed and counted (the divergence restricted to
    the measured entries). ``value``: ``func(y)`` when the caller already has it (saves one evaluation).
    ``weights`` (real, broadcastable to ``y``): the weighted divergence ``Σ w_i ∂func_i/∂y_i`` instead (PURE's
    per-entry variances), estimated as ``bᵀ diag(w) (func(y + ε b) − func(y)) / ε``. The result keeps the autograd
    graph of ``func``."""
    eps = default_epsilon(y) if epsilon is None else float(epsilon)
    if not eps > 0:
        raise MetadipError(f"SURE epsilon must be > 0, got {epsilon}")
    b = _probe(y, generator)
    if mask is not None:
        b = b * mask.to(b.device, b.real.dtype)
    if value is None:
        value = func(y)
    change = func(y + eps * b) - value
    if weights is not None:
        b = b * weights.to(b.device, b.real.dtype)
    return _real_inner(b, change) / eps


def sure_loss(
    op,
    forward: Callable[[torch.Tensor], torch.Tensor],
    y: torch.Tensor,
    sigma: float,
    generator: torch.Generator,
    *,
    epsilon: float | None = None,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Monte-Carlo SURE of the per-entry mean squared error of ``forward(y)`` (see the module docstring); PURE
    (Poisson–Gaussian) when ``op`` has a Poisson peak.

    ``op``: the forward operator (a :class:`metadip.operators.LinearOperator`, or ``None`` for denoising).
    ``forward``: maps a measurement ``y'`` (shaped like ``y``) to the image estimate ``f(y')`` (B×C×H×W) — for
    DIP, builds the network input from ``y'`` and runs the network, so the probe goes through ``z``.
    ``sigma``: Gaussian noise std of ``y`` in [0, 1] units (the operator's ``sigma / 255``). ``generator``: draws
    the divergence probe. ``epsilon``: its finite-difference step (default :func:`default_epsilon`). ``weight``
    (0/1, broadcastable to ``y``): only these of the measured entries count and are probed — e.g. the training
    entries when DIP's hold-out stopping rule keeps the others out of the loss.

    Returns a scalar ``(‖h(y) − y‖² − N s² + 2 s² div h) / m`` over the ``m`` measured entries, with
    ``h = A ∘ forward`` restricted to them, ``N`` the number of real components and ``s²`` their noise variance;
    with a Poisson peak, ``(‖h(y) − y‖² − Σ v_i + 2 Σ v_i ∂h_i/∂y_i) / m`` with ``v_i = y_i / peak + s²``.
    Differentiable in the parameters of ``forward`` (both network evaluations keep their graph)."""
    if not sigma >= 0:
        raise MetadipError(f"SURE needs a noise std >= 0 in [0, 1] units, got {sigma}")
    peak = None if op is None else getattr(op, "poisson", None)
    if peak is not None and (y.is_complex() or not peak > 0):
        raise MetadipError(f"PURE needs real measurements and a Poisson peak > 0, got peak {peak}")
    mask = None if op is None else op.measurement_mask()
    if mask is not None:
        mask = mask.to(y.device, y.real.dtype)
    if weight is not None:
        weight = weight.to(y.device, y.real.dtype)
        mask = weight if mask is None else mask * weight

    def measure(measurement: torch.Tensor) -> torch.Tensor:
        out = forward(measurement)
        if op is not None:
            out = op.A(out)
        if out.shape != y.shape:
            raise MetadipError(f"SURE: the estimate measures to shape {tuple(out.shape)}, y is {tuple(y.shape)}")
        return out if mask is None else out * mask

    value = measure(y)
    residual = value - y if mask is None else (value - y) * mask
    squared = (residual.real.square() + residual.imag.square()) if residual.is_complex() else residual.square()
    entries = y.numel() if mask is None else float(mask.expand(y.shape).sum())
    entries = max(float(entries), 1.0)
    parts = 2 if y.is_complex() else 1
    variance = float(sigma) ** 2 / parts  # per real component
    if peak is not None:  # PURE: per-entry variance y / peak + s², unbiased for peak · μ / peak² + s²
        variances = y.detach() / float(peak) + variance
        if mask is not None:
            variances = variances * mask
        divergence = mc_divergence(measure, y, generator, epsilon=epsilon, mask=mask, value=value, weights=variances)
        return (squared.sum() - variances.expand(y.shape).sum() + 2 * divergence) / entries
    divergence = mc_divergence(measure, y, generator, epsilon=epsilon, mask=mask, value=value) if sigma > 0 else 0.0
    return (squared.sum() - parts * entries * variance + 2 * variance * divergence) / entries


def sure_through_input(
    op,
    run: Callable[[torch.Tensor], torch.Tensor],
    z: torch.Tensor,
    y: torch.Tensor,
    sigma: float,
    generator: torch.Generator,
    *,
    input_builder: Callable[[torch.Tensor], torch.Tensor] | None = None,
    weight: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(SURE of ``run``'s estimate for ``y``, that estimate) for a network whose input is built from the
    measurement: ``run(source)`` maps a network input to the image; ``z`` is the input for ``y`` and
    ``input_builder`` (y′ ↦ z′) builds it for the probe's perturbed measurement (without one, every evaluation
    uses ``z`` and the divergence is 0). The one SURE step of both DIP loops (online and meta inner loop)."""
    outputs: list[torch.Tensor] = []

    def forward_from(measurement: torch.Tensor) -> torch.Tensor:
        source = z if measurement is y or input_builder is None else input_builder(measurement)
        out = run(source)
        outputs.append(out)
        return out

    objective = sure_loss(op, forward_from, y, float(sigma), generator, weight=weight)
    return objective, outputs[0]
