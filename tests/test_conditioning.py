"""Measurement-conditioned inputs and the residual skip net that uses them."""

import copy

import pytest
import torch
from conftest import sample_image

from metadip import dip, operators
from metadip.conditioning import backprojection, conditioned_channels, make_conditioned_input
from metadip.errors import MetadipError
from metadip.generators import InputRecipe, build_generator


def _measure(spec, size=32):
    x = sample_image("astronaut", size)
    generator = torch.Generator().manual_seed(0)
    op = operators.build_operator(spec, x.shape[1:], generator=generator)
    return x, op, operators.simulate(x, op, generator)


@pytest.mark.parametrize(
    "spec", ["denoise:sigma=10", "inpaint:ratio=0.5", "superres:factor=4", "superres:factor=8", "fourier:ratio=0.3"]
)
def test_estimate_is_close_to_the_clean_image(spec):
    x, op, y = _measure(spec)
    image, normaliser = backprojection(op, y)
    assert image.shape == x.shape and normaliser.shape == x.shape
    assert float(normaliser.max()) == pytest.approx(1.0)
    assert 0 <= float(image.min()) and float(image.max()) <= 1
    assert float(torch.mean((image - x) ** 2)) < float(torch.mean((0.5 - x) ** 2))


def test_held_out_measurements_do_not_leak_into_z():
    x, op, y = _measure("denoise:sigma=25")
    train, held = dip.holdout_split(op, y, 0.2, torch.Generator().manual_seed(1))
    image, _ = backprojection(op, y, weight=train)
    hidden = held.expand_as(image) > 0
    spiked = y.clone()
    spiked[hidden] = 1.0 - spiked[hidden]  # changing held-out values must not change the estimate
    again, _ = backprojection(op, spiked, weight=train)
    assert torch.equal(image, again)
    assert not torch.equal(image[hidden], y[hidden].clamp(0, 1))


def test_conditioned_input_layout_and_residual_net_starts_at_the_estimate():
    x, op, y = _measure("inpaint:ratio=0.3")
    z = make_conditioned_input(InputRecipe(), op, y, noise_channels=4)
    assert z.shape == (1, conditioned_channels(3, 4), 32, 32)
    net = build_generator(
        {
            "kind": "skip",
            "num_scales": 2,
            "channels_down": 8,
            "channels_up": 8,
            "channels_skip": 2,
            "in_channels": 10,
            "residual": True,
        },
        out_channels=3,
    )
    out = net(z, size=(32, 32))
    assert torch.allclose(out, z[:, :3].clamp(1e-3, 1 - 1e-3), atol=1e-5)
    assert build_generator(net.config).config["residual"] is True


def test_residual_net_needs_a_sigmoid_output_and_has_no_pixel_space_variant():
    arch = {"kind": "skip", "num_scales": 2, "channels_down": 8, "channels_up": 8, "channels_skip": 2}
    with pytest.raises(MetadipError, match="sigmoid"):
        build_generator({**arch, "in_channels": 10, "residual": True, "need_sigmoid": False}, out_channels=3)
    with pytest.raises(MetadipError, match="unknown skip generator option.*residual_space"):  # retired
        build_generator({**arch, "in_channels": 10, "residual": True, "residual_space": "pixel"}, out_channels=3)


def test_lowpass_estimate_smooths_noise_and_fills_holes_from_neighbours():
    x = sample_image("camera", 32)
    generator = torch.Generator().manual_seed(0)
    op = operators.build_operator("inpaint:ratio=0.5,sigma=25", x.shape[1:], generator=generator)
    y = operators.simulate(x, op, generator)
    raw, _ = backprojection(op, y)
    smooth, _ = backprojection(op, y, lowpass=1.0)
    mse = lambda a: float(torch.mean((a - x) ** 2))  # noqa: E731
    assert mse(smooth) < 0.5 * mse(raw)  # holes filled from neighbours, noise averaged
    # The normalised convolution never reads hidden pixels: their values do not change the estimate.
    hidden = op.measurement_mask().expand_as(y) == 0
    flipped = y.clone()
    flipped[hidden] = 1.0 - flipped[hidden]
    again, _ = backprojection(op, flipped, lowpass=1.0)
    assert torch.equal(smooth, again)


def test_lowpass_of_a_constant_is_the_constant_and_kernel_fits_tiny_images():
    from metadip.conditioning import gaussian_blur, gaussian_kernel1d

    flat = torch.full((1, 3, 5, 7), 0.3)
    torch.testing.assert_close(gaussian_blur(flat, 2.0), flat)
    assert gaussian_kernel1d(4.0, 3).numel() == 5  # radius capped at size - 1 for reflection padding
    assert float(gaussian_kernel1d(1.0, 64).sum()) == pytest.approx(1.0)


def test_input_recipe_lowpass_round_trips_and_is_validated():
    from metadip.errors import MetadipError

    recipe = InputRecipe(lowpass=1.5)
    assert InputRecipe.from_dict(recipe.to_dict()) == recipe
    assert InputRecipe.from_dict({"kind": "uniform", "channels": 4, "scale": 0.1, "seed": 0}).lowpass == 0.0
    with pytest.raises(MetadipError, match="lowpass"):
        InputRecipe(lowpass=-1)


# ------------------------------------------------------------------------------------------- operator maps


def _measured(spec: str, size: int = 64, name: str = "astronaut", seed: int = 0):
    x = sample_image(name, size)
    generator = torch.Generator().manual_seed(seed)
    op = operators.build_operator(spec, x.shape[1:], generator=generator)
    return x, op, operators.simulate(x, op, generator)


@pytest.mark.parametrize("sigma", [10, 25, 50])
def test_noise_level_estimate_tracks_sigma_and_ignores_inpainting_holes(sigma):
    from metadip.conditioning import measurement_noise_level

    def level(spec):
        _, op, y = _measured(spec)
        return float(measurement_noise_level(op, y)) * 255

    for spec in (f"denoise:sigma={sigma}", f"inpaint:ratio=0.5,sigma={sigma}"):
        assert 0.85 * sigma < level(spec) < 1.15 * sigma + 4, spec  # + a little image structure
    # on a low-resolution measurement texture weighs more, but the estimate still grows with the noise
    assert level(f"superres:factor=2,sigma={sigma}") > level(f"superres:factor=2,sigma={sigma // 2}") + 0.3 * sigma
    assert level("inpaint:ratio=0.5") < 8  # zero-filled holes must not read as noise


def test_retired_input_options_are_refused_and_a_recorded_off_switch_still_loads():
    """Sidecars and configs written before operator maps were removed record ``operator_maps = false``: they
    load unchanged; one that turns maps (or the retired estimate 'both') on is refused with why."""
    recorded = {"kind": "uniform", "channels": 4, "scale": 0.1, "seed": 0, "lowpass": 1.0, "operator_maps": False}
    assert InputRecipe.from_dict(recorded) == InputRecipe(channels=4, lowpass=1.0)
    assert "operator_maps" not in InputRecipe.from_dict(recorded).to_dict()
    with pytest.raises(MetadipError, match="operator maps in z were retired"):
        InputRecipe.from_dict({**recorded, "operator_maps": True})
    with pytest.raises(MetadipError, match="retired"):
        InputRecipe(estimate="both", lowpass=1.0)


@pytest.mark.parametrize(
    ("size", "spec"),
    [
        (8, "superres:factor=4"),
        (5, "inpaint:ratio=0.5"),
        (3, "denoise:sigma=25"),
        (7, "fourier:ratio=0.3"),
        (1, "denoise"),
    ],
)
def test_conditioned_inputs_are_finite_on_tiny_images(size, spec):
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    op = operators.build_operator(spec, x.shape[1:], generator=torch.Generator().manual_seed(0))
    y = operators.simulate(x, op, torch.Generator().manual_seed(1))
    for recipe in (InputRecipe(lowpass=1.0), InputRecipe(estimate="tikhonov")):
        z = make_conditioned_input(recipe, op, y, noise_channels=1)
        assert z.shape == (1, 7, size, size) and torch.isfinite(z).all()


def _dense_tikhonov(op, y, lam):
    """The Tikhonov image by a dense solve of (AᴴA + λ∇ᴴ∇) x = Aᴴy (tiny images only)."""
    from metadip.conditioning import _gradient, _gradient_adjoint

    shape = (1, *op.image_shape)
    n = int(torch.tensor(op.image_shape).prod())
    basis = torch.eye(n, dtype=torch.float32).view(n, *op.image_shape)
    columns = [
        (op.A_adjoint(op.A(b.view(shape))).real + lam * _gradient_adjoint(*_gradient(b.view(shape)))).flatten()
        for b in basis
    ]
    matrix = torch.stack(columns, dim=1).double()
    rhs = op.A_adjoint(y).real.flatten().double()
    return torch.linalg.solve(matrix, rhs).float().view(shape)


@pytest.mark.parametrize(
    "spec",
    [
        "inpaint:ratio=0.5",
        "superres:factor=2",
        "deblur:kernel=gauss,width=1.5",
        "fourier:ratio=0.4",
        "denoise:sigma=20",
    ],
)
def test_tikhonov_estimate_solves_the_regularised_normal_equations(spec):
    """Conjugate gradients reach the dense solution of argmin ‖Ax − y‖² + λ‖∇x‖², λ from the noise rule."""
    from metadip.conditioning import measurement_noise_level, tikhonov_estimate

    x = 0.3 + 0.4 * sample_image("camera", 8)[:, :1]  # values well inside (0, 1): the final clamp is inactive
    generator = torch.Generator().manual_seed(0)
    op = operators.build_operator(spec, x.shape[1:], generator=generator)
    y = operators.simulate(x, op, generator)
    noise, floor = 25.0, 0.01
    estimate = tikhonov_estimate(op, y, noise, floor)
    lam = floor + noise * float(measurement_noise_level(op, y)) ** 2
    expected = _dense_tikhonov(op, y, lam)
    assert float(expected.min()) > 0 and float(expected.max()) < 1
    torch.testing.assert_close(estimate, expected, atol=2e-4, rtol=0)


def test_tikhonov_estimate_is_noise_adaptive_and_beats_the_back_projection():
    """Closer to the clean picture than the raw and the low-passed back-projection where the low-pass is the
    wrong tool (mild noise, holes, blur); smooths more the noisier y is; barely smooths a clean measurement."""
    from metadip import metrics
    from metadip.conditioning import _gradient, tikhonov_estimate

    estimates, gains = {}, {}
    for name in ("astronaut", "camera", "coffee", "rocket"):
        x = sample_image(name, 64)
        for spec in (
            "denoise:sigma=10",
            "denoise:sigma=50",
            "inpaint:ratio=0.5",
            "deblur:kernel=gauss,width=2,sigma=2",
        ):
            generator = torch.Generator().manual_seed(0)
            op = operators.build_operator(spec, x.shape[1:], generator=generator)
            y = operators.simulate(x, op, generator)
            estimates[spec] = (y, tikhonov_estimate(op, y, 50.0, 0.003))
            raw, _ = backprojection(op, y)
            smooth, _ = backprojection(op, y, lowpass=1.0)
            ours = metrics.psnr(estimates[spec][1], x)
            gains.setdefault(spec, []).append(ours - max(metrics.psnr(smooth, x), metrics.psnr(raw, x)))
    for spec, gain in gains.items():
        if spec != "denoise:sigma=50":  # there the low-pass is about as good
            assert float(torch.tensor(gain).median()) > 0.5, (spec, gain)

    def roughness_kept(spec):
        y, estimate = estimates[spec]
        return sum(g.abs().mean() for g in _gradient(estimate)) / sum(g.abs().mean() for g in _gradient(y))

    assert roughness_kept("denoise:sigma=50") < 0.8 * roughness_kept("denoise:sigma=10")
    clean_op = operators.build_operator("denoise:sigma=0", x.shape[1:])
    clean = operators.simulate(x, clean_op, torch.Generator().manual_seed(0))
    assert metrics.psnr(tikhonov_estimate(clean_op, clean, 50.0, 0.003), x) > 40  # almost no smoothing


def test_tikhonov_input_hides_held_out_measurements_and_round_trips():
    x, op, y = _measure("inpaint:ratio=0.5,sigma=10")
    recipe = InputRecipe(estimate="tikhonov")
    assert InputRecipe.from_dict(recipe.to_dict()) == recipe
    assert InputRecipe.from_dict({"kind": "uniform", "channels": 4}).estimate == "backprojection"
    z = make_conditioned_input(recipe, op, y, noise_channels=2)
    plain = make_conditioned_input(InputRecipe(), op, y, noise_channels=2)
    assert z.shape == plain.shape and not torch.equal(z[:, :3], plain[:, :3])
    torch.testing.assert_close(z[:, 3:], plain[:, 3:])  # only the estimate differs
    weight = (torch.rand(1, 1, 32, 32, generator=torch.Generator().manual_seed(1)) > 0.2).float()
    hidden = make_conditioned_input(recipe, op, y, noise_channels=2, weight=weight)
    scrambled = y.clone()
    scrambled[(weight == 0).expand_as(y)] = 0.9
    assert torch.equal(hidden, make_conditioned_input(recipe, op, scrambled, noise_channels=2, weight=weight))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"estimate": "wiener"}, "unknown input estimate"),
        ({"estimate": "tikhonov", "lowpass": 1.0}, "lowpass = 0"),
        ({"estimate": "bm3d", "lowpass": 1.0}, "'bm3d' smooths by itself"),
        ({"estimate": "tikhonov", "tikhonov_noise": 0.0, "tikhonov_floor": 0.0}, "tikhonov_floor or"),
        ({"estimate": "both"}, "retired"),
        ({"tikhonov_noise": -1.0}, "tikhonov_noise"),
    ],
)
def test_input_recipe_refuses_bad_estimate_options(options, message):
    with pytest.raises(MetadipError, match=message):
        InputRecipe(**options)


def test_bm3d_estimate_denoises_hides_held_out_measurements_and_refuses_other_operators():
    pytest.importorskip("bm3d")
    x, op, y = _measure("denoise:sigma=25")
    recipe = InputRecipe(estimate="bm3d")
    assert InputRecipe.from_dict(recipe.to_dict()) == recipe
    z = make_conditioned_input(recipe, op, y, noise_channels=2)
    plain = make_conditioned_input(InputRecipe(), op, y, noise_channels=2)
    assert z.shape == plain.shape
    torch.testing.assert_close(z[:, 3:], plain[:, 3:])  # only the estimate differs
    error = float(torch.mean((z[:, :3] - x) ** 2))
    assert error < 0.5 * float(torch.mean((y - x) ** 2))  # BM3D, not y
    # reproducible to BM3D's floating-point rounding (its native FFTs), not bit for bit
    torch.testing.assert_close(z, make_conditioned_input(recipe, op, y, noise_channels=2), rtol=0, atol=1e-5)
    weight = (torch.rand(1, 1, 32, 32, generator=torch.Generator().manual_seed(1)) > 0.2).float()
    hidden = make_conditioned_input(recipe, op, y, noise_channels=2, weight=weight)
    scrambled = y.clone()
    scrambled[(weight == 0).expand_as(y)] = 0.9
    again = make_conditioned_input(recipe, op, scrambled, noise_channels=2, weight=weight)
    torch.testing.assert_close(hidden, again, rtol=0, atol=1e-5)
    assert not torch.allclose(hidden, z, atol=1e-3)  # the hidden entries were replaced, not used
    _, inpaint, y_inpaint = _measure("inpaint:ratio=0.5")
    with pytest.raises(MetadipError, match="'bm3d' is for denoising"):
        make_conditioned_input(recipe, inpaint, y_inpaint, noise_channels=2)


def test_bm3d_estimate_without_the_package_is_a_one_line_error(monkeypatch):
    from metadip import conditioning

    monkeypatch.setattr(conditioning, "bm3d_available", lambda: False)
    _, op, y = _measure("denoise:sigma=25")
    with pytest.raises(MetadipError, match=r"pip install 'metadip\[baselines\]'"):
        make_conditioned_input(InputRecipe(estimate="bm3d"), op, y, noise_channels=2)


@pytest.mark.parametrize("mean", [3.0, 20.0, 150.0])
def test_anscombe_stabilises_poisson_variance_and_its_inverse_is_unbiased(mean):
    """The generalised Anscombe transform gives ≈ unit variance, and the closed-form inverse maps the transform's
    mean back to the Poisson mean (the exact unbiased inverse, not the algebraic one)."""
    from metadip.denoisers import anscombe, inverse_anscombe

    counts = torch.poisson(torch.full((200_000,), mean), generator=torch.Generator().manual_seed(0)).numpy()
    read = 1.5 * torch.randn(200_000, generator=torch.Generator().manual_seed(1)).numpy()
    for noise, sigma in ((0.0, 0.0), (read, 1.5)):
        transformed = anscombe(counts + noise, sigma)
        assert float(transformed.var()) == pytest.approx(1.0, abs=0.12)
        assert float(inverse_anscombe(transformed.mean(), sigma)) == pytest.approx(mean, rel=0.03, abs=0.1)
    algebraic = (anscombe(counts, 0.0).mean() / 2) ** 2 - 3 / 8
    assert abs(float(inverse_anscombe(anscombe(counts, 0.0).mean(), 0.0)) - mean) < abs(algebraic - mean)


def test_bm3d_estimate_under_poisson_noise_uses_the_anscombe_transform():
    pytest.importorskip("bm3d")
    x, op, y = _measure("denoise:sigma=0,poisson=20")
    z = make_conditioned_input(InputRecipe(estimate="bm3d"), op, y, noise_channels=2)
    gaussian = copy.copy(op)  # the same measurement treated as Gaussian noise of the σ̂ estimated from y
    gaussian.poisson = None
    plain = make_conditioned_input(InputRecipe(estimate="bm3d"), gaussian, y, noise_channels=2)
    error = float(torch.mean((z[:, :3] - x) ** 2))
    assert error < 0.5 * float(torch.mean((y - x) ** 2))
    assert error < float(torch.mean((plain[:, :3] - x) ** 2))  # signal-dependent noise handled as such
