"""SURE and PURE: unbiased for the true error on toy problems with known divergence, exact Monte-Carlo divergence for
linear maps, differentiable, measurement-space generalisation for inpainting / partial Fourier / superres."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from metadip.errors import MetadipError
from metadip.images import dead_leaves
from metadip.losses import default_epsilon, mc_divergence, sure_loss
from metadip.operators import build_operator, parse_operator_spec, simulate

SIZE = 32
DRAWS = 256  # independent noise draws, as one batch (SURE and the MSE are both means over the batch)


def _kernel() -> torch.Tensor:
    """A normalised 5×5 Gaussian blur kernel (std 1.2), 1×1×5×5."""
    t = torch.arange(5, dtype=torch.float32) - 2
    g = torch.exp(-(t**2) / (2 * 1.2**2))
    k = torch.outer(g, g)
    return (k / k.sum())[None, None]


def _blur(image: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Per-channel blur with zero padding: a linear map whose trace is exactly numel × the kernel's centre tap."""
    b, c, h, w = image.shape
    return F.conv2d(image.reshape(b * c, 1, h, w), kernel, padding=kernel.shape[-1] // 2).reshape(b, c, h, w)


@pytest.fixture(scope="module")
def clean() -> torch.Tensor:
    return dead_leaves(SIZE, 3, torch.Generator().manual_seed(5))


def _noisy(clean: torch.Tensor, sigma: float, seed: int = 0) -> torch.Tensor:
    noise = torch.randn((DRAWS, *clean.shape[1:]), generator=torch.Generator().manual_seed(seed))
    return clean + sigma * noise


@pytest.mark.parametrize("sigma", [0.05, 0.2])
def test_sure_matches_true_mse_of_a_linear_smoother(clean, sigma):
    kernel = _kernel()
    y = _noisy(clean, sigma)

    def smoother(measurement):
        return 0.9 * _blur(measurement, kernel) + 0.05

    estimate = smoother(y)
    true_mse = float((estimate - clean).square().mean())
    naive = float((estimate - y).square().mean())
    sure = float(sure_loss(None, smoother, y, sigma, torch.Generator().manual_seed(1)))
    assert sure == pytest.approx(true_mse, rel=0.01)
    assert abs(sure - true_mse) < 0.1 * abs(naive - true_mse)  # the plain data fit is biased, SURE is not


def test_sure_exact_divergence_for_a_scaled_identity(clean):
    """f(y) = a·y + c: the one-probe divergence is a·‖b‖² exactly; compare with the closed form."""
    a, c, sigma = 0.7, 0.1, 0.1
    y = _noisy(clean, sigma)[:4]
    sure = sure_loss(None, lambda m: a * m + c, y, sigma, torch.Generator().manual_seed(2))
    n = y.numel()
    probe = torch.randn(y.shape, generator=torch.Generator().manual_seed(2))
    divergence = a * float(probe.square().sum())
    expected = float(((a - 1) * y + c).square().mean()) - sigma**2 + 2 * sigma**2 * divergence / n
    assert float(sure) == pytest.approx(expected, rel=1e-4)


def test_mc_divergence_matches_the_exact_trace_of_a_blur(clean):
    kernel = _kernel()
    y = _noisy(clean, 0.1)
    trace = y.numel() * float(kernel[0, 0, 2, 2])  # zero padding: every output pixel sees its input via the centre
    estimate = float(mc_divergence(lambda m: _blur(m, kernel), y, torch.Generator().manual_seed(3)))
    assert estimate == pytest.approx(trace, rel=0.02)
    # linear map: the finite difference is exact whatever epsilon, so one probe gives bᵀJb exactly
    small = float(mc_divergence(lambda m: _blur(m, kernel), y, torch.Generator().manual_seed(3), epsilon=1e-2))
    assert small == pytest.approx(estimate, rel=1e-3)


def test_mc_divergence_respects_the_mask():
    y = torch.rand(1, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., :4, :] = 1.0
    many = torch.stack(
        [mc_divergence(lambda m: 2 * m, y, torch.Generator().manual_seed(s), mask=mask) for s in range(400)]
    )
    assert float(many.mean()) == pytest.approx(2 * 32, rel=0.05)  # trace of 2·I over the 32 masked entries


def test_sure_is_differentiable_and_its_gradient_is_right(clean):
    sigma = 0.1
    y = _noisy(clean, sigma)[:8]
    scale = torch.tensor(0.8, requires_grad=True)
    loss = sure_loss(None, lambda m: scale * m, y, sigma, torch.Generator().manual_seed(4))
    loss.backward()
    # SURE(a) = (a − 1)²‖y‖²/n − σ² + 2σ² a ‖b‖²/n  =>  dSURE/da = 2(a − 1)‖y‖²/n + 2σ²‖b‖²/n
    n = y.numel()
    probe = torch.randn(y.shape, generator=torch.Generator().manual_seed(4))
    expected = 2 * (0.8 - 1) * float(y.square().sum()) / n + 2 * sigma**2 * float(probe.square().sum()) / n
    assert scale.grad is not None and float(scale.grad) == pytest.approx(expected, rel=1e-4)


def test_sure_gradient_flows_into_a_network_through_both_evaluations(clean):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 3, 3, padding=1))
    y = _noisy(clean, 0.1)[:1]
    loss = sure_loss(None, lambda m: torch.sigmoid(net(m)), y, 0.1, torch.Generator().manual_seed(0))
    loss.backward()
    grads = [p.grad for p in net.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(float(g.abs().sum()) > 0 for g in grads)


@pytest.mark.parametrize(
    "spec", ["inpaint:ratio=0.5,sigma=50", "fourier:ratio=0.4,sigma=50", "superres:factor=2,sigma=50"]
)
def test_measurement_space_sure_matches_the_error_seen_through_the_operator(clean, spec):
    generator = torch.Generator().manual_seed(6)
    op = build_operator(parse_operator_spec(spec), (3, SIZE, SIZE), generator=generator)
    x = clean.expand(DRAWS, -1, -1, -1)
    y = simulate(x, op, generator)
    kernel = _kernel()

    def reconstruct(measurement):  # linear: blurred back-projection
        return _blur(op.A_adjoint(measurement), kernel) + 0.1

    estimate = reconstruct(y)
    residual = op.A(estimate) - op.A(x)
    mask = op.measurement_mask()
    weight = torch.ones_like(residual.real) if mask is None else mask.expand(residual.shape).to(residual.real.dtype)
    squared = residual.real.square() + residual.imag.square() if residual.is_complex() else residual.square()
    true_error = float((squared * weight).sum() / weight.sum())
    fit = op.A(estimate) - y
    fit = fit.real.square() + fit.imag.square() if fit.is_complex() else fit.square()
    naive = float((fit * weight).sum() / weight.sum())
    sure = float(sure_loss(op, reconstruct, y, op.sigma / 255, torch.Generator().manual_seed(7)))
    assert sure == pytest.approx(true_error, rel=0.01)
    assert abs(sure - true_error) < 0.1 * abs(naive - true_error)


@pytest.mark.parametrize(
    "spec", ["denoise:sigma=0,poisson=20", "denoise:sigma=10,poisson=40", "inpaint:ratio=0.5,sigma=5,poisson=30"]
)
def test_pure_matches_true_mse_under_poisson_noise(clean, spec):
    """PURE (Poisson–Gaussian): unbiased for the true error of an affine smoother, where SURE with the Gaussian σ
    alone (or the plain data fit) is not."""
    generator = torch.Generator().manual_seed(8)
    op = build_operator(parse_operator_spec(spec), (3, SIZE, SIZE), generator=generator)
    x = clean.expand(DRAWS, -1, -1, -1)
    y = simulate(x, op, generator)
    kernel = _kernel()

    def smoother(measurement):
        return 0.9 * _blur(measurement, kernel) + 0.05

    residual = op.A(smoother(y)) - op.A(x)
    mask = op.measurement_mask()
    weight = torch.ones_like(residual) if mask is None else mask.expand(residual.shape).float()
    true_error = float((residual.square() * weight).sum() / weight.sum())
    pure = float(sure_loss(op, smoother, y, op.sigma / 255, torch.Generator().manual_seed(9)))
    gaussian = copy.copy(op)  # the same operator (mask) without its Poisson part: SURE with σ alone
    gaussian.poisson = None
    gaussian_only = float(sure_loss(gaussian, smoother, y, op.sigma / 255, torch.Generator().manual_seed(9)))
    assert pure == pytest.approx(true_error, rel=0.02)
    assert abs(pure - true_error) < 0.1 * abs(gaussian_only - true_error)


def test_pure_gradient_and_weighted_divergence(clean):
    """f(y) = a·y: PURE = (a − 1)²‖y‖²/n − Σv/n + 2a bᵀdiag(v)b/n with v = y/peak + s² (closed form, one probe)."""
    op = build_operator(parse_operator_spec("denoise:sigma=5,poisson=25"), (3, SIZE, SIZE))
    y = simulate(clean.expand(4, -1, -1, -1), op, torch.Generator().manual_seed(1))
    scale = torch.tensor(0.8, requires_grad=True)
    loss = sure_loss(op, lambda m: scale * m, y, 5 / 255, torch.Generator().manual_seed(2))
    loss.backward()
    n = y.numel()
    v = y / 25 + (5 / 255) ** 2
    probe = torch.randn(y.shape, generator=torch.Generator().manual_seed(2))
    weighted = float((v * probe.square()).sum())
    expected = 0.04 * float(y.square().sum()) / n - float(v.sum()) / n + 2 * 0.8 * weighted / n
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-4)
    assert float(scale.grad) == pytest.approx(2 * (0.8 - 1) * float(y.square().sum()) / n + 2 * weighted / n, rel=1e-4)


def test_sure_refuses_bad_inputs(clean):
    with pytest.raises(MetadipError, match="noise std"):
        sure_loss(None, lambda m: m, clean, -1.0, torch.Generator())
    with pytest.raises(MetadipError, match="epsilon"):
        mc_divergence(lambda m: m, clean, torch.Generator(), epsilon=0.0)
    superres = build_operator(parse_operator_spec("superres:factor=2,sigma=10"), (3, SIZE, SIZE))
    with pytest.raises(MetadipError, match="shape"):  # forward must return an image, not a measurement
        sure_loss(superres, lambda m: m, torch.rand(1, 3, SIZE // 2, SIZE // 2), 0.04, torch.Generator())


def test_sure_is_deterministic_per_generator_and_defaults_epsilon(clean):
    y = _noisy(clean, 0.1)[:2]

    def f(m):
        return torch.tanh(m)

    one = sure_loss(None, f, y, 0.1, torch.Generator().manual_seed(9))
    two = sure_loss(None, f, y, 0.1, torch.Generator().manual_seed(9))
    assert torch.equal(one, two)
    assert default_epsilon(y) == pytest.approx(1e-3 * float(y.abs().max()))
    assert default_epsilon(torch.zeros(3)) == 1e-5
