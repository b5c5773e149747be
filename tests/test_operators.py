"""Forward operators: adjointness, shapes, reproducibility, spec parsing, user files and artifacts."""

import json

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from metadip.errors import MetadipError
from metadip.operators import (
    OPERATORS,
    OperatorSpec,
    build_operator,
    describe_operators,
    load_kernel,
    load_mask,
    load_operator_for_measurement,
    parse_operator_spec,
    save_operator_artifacts,
    simulate,
)

FAMILY_CASES = [
    "denoise:sigma=25",
    "inpaint:ratio=0.5",
    "inpaint:ratio=0.3,holes=blocks,block=4",
    "superres:factor=2",
    "superres:factor=4",
    "superres:factor=2,filter=gauss",
    "superres:factor=4,filter=gauss",
    "deblur:kernel=gauss,width=2",
    "deblur:kernel=motion,length=9",
    "deblur:kernel=motion,length=4,angle=30",
    "fourier:ratio=0.25,pattern=lines",
    "fourier:ratio=0.3,center=0.2,pattern=points",
]
SHAPES = [(3, 17, 20), (1, 16, 16), (2, 9, 12)]


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _inner(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Real inner product Re(sum(conj(a) * b))."""
    return (a.conj() * b).real.sum() if a.is_complex() else (a * b).sum()


def _check_adjoint(op, shape):
    x = torch.randn(2, *shape, dtype=torch.float64, generator=_gen(1))
    ax = op.A(x)
    y_dtype = torch.complex128 if op.is_complex else torch.float64
    y = torch.randn(ax.shape, dtype=y_dtype, generator=_gen(2))
    torch.testing.assert_close(_inner(ax, y), _inner(x, op.A_adjoint(y)), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("spec", FAMILY_CASES)
def test_adjoint_identity(spec, shape):
    _check_adjoint(build_operator(spec, shape, generator=_gen()), shape)


def test_adjoint_identity_with_given_arrays():
    shape = (2, 11, 14)
    kernel = torch.rand(4, 6, generator=_gen(3))
    _check_adjoint(build_operator("deblur", shape, kernel=kernel), shape)
    mask = torch.rand(11, 14, generator=_gen(4)) > 0.5
    _check_adjoint(build_operator("inpaint", shape, mask=mask), shape)
    _check_adjoint(build_operator("fourier", shape, mask=mask), shape)


def test_large_generated_kernel_wraps_on_tiny_image():
    shape = (1, 8, 8)  # gauss width=3 gives a 19×19 kernel, periodised onto the 8×8 torus
    op = build_operator("deblur:kernel=gauss,width=3", shape)
    _check_adjoint(op, shape)
    torch.testing.assert_close(op.A(torch.ones(1, *shape)), torch.ones(1, *shape))


@pytest.mark.parametrize("channels", [1, 2, 3])
@pytest.mark.parametrize("spec", FAMILY_CASES)
def test_shapes_and_dtypes(spec, channels):
    op = build_operator(spec, (channels, 16, 20), generator=_gen())
    x = torch.rand(2, channels, 16, 20)
    y = op.A(x)
    assert tuple(y.shape) == (2, *op.measurement_shape)
    assert y.dtype == (torch.complex64 if op.is_complex else torch.float32)
    back = op.A_adjoint(y)
    assert back.shape == x.shape and back.dtype == torch.float32
    noisy = simulate(x, op, _gen(1))
    assert noisy.shape == y.shape and noisy.dtype == y.dtype


@pytest.mark.parametrize("spec", FAMILY_CASES)
def test_gradient_of_data_term_is_twice_adjoint_of_residual(spec):
    op = build_operator(spec, (2, 12, 13), generator=_gen())
    x = torch.rand(1, 2, 12, 13, dtype=torch.float64, requires_grad=True)
    op.A(x).abs().pow(2).sum().backward()
    torch.testing.assert_close(x.grad, 2 * op.A_adjoint(op.A(x.detach())))
    assert x.grad.abs().sum() > 0


DRAWN_CASES = [
    s for s in FAMILY_CASES if s.startswith(("inpaint", "fourier", "deblur:kernel=motion,length=9"))
]


@pytest.mark.parametrize("spec", DRAWN_CASES)
def test_same_seed_same_operator_other_seed_differs(spec):
    x = torch.rand(1, 3, 16, 20)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    first, again = (build_operator(spec, (3, 16, 20), generator=_gen(7)) for _ in range(2))
    other = build_operator(spec, (3, 16, 20), generator=_gen(8))
    assert torch.equal(torch.get_rng_state(), state), "operators must draw only from the given generator"
    assert first.spec() == again.spec() and torch.equal(first.A(x), again.A(x))
    assert not torch.equal(first.A(x), other.A(x))


def test_inpaint_masks_hide_the_requested_fraction():
    pixels = build_operator("inpaint:ratio=0.3", (3, 20, 30), generator=_gen())
    mask = pixels.measurement_mask()
    assert mask.shape == (1, 1, 20, 30) and set(mask.unique().tolist()) == {0.0, 1.0}
    assert mask.mean().item() == pytest.approx(0.7, abs=1 / 600)
    blocks = build_operator("inpaint:ratio=0.5,holes=blocks,block=5", (1, 20, 30), generator=_gen())
    cells = blocks.measurement_mask()[0, 0].reshape(4, 5, 6, 5)
    assert (cells.amax(dim=(1, 3)) == cells.amin(dim=(1, 3))).all(), "holes are whole 5×5 blocks"
    assert blocks.measurement_mask().mean().item() == pytest.approx(0.5)


def test_fourier_mask_keeps_centre_and_ratio():
    lines = build_operator("fourier:ratio=0.25,center=0.125", (1, 32, 24), generator=_gen())
    mask = lines.measurement_mask()[0, 0]
    assert (mask == mask[:, :1]).all(), "lines are whole k-space rows"
    assert mask[:, 0].sum().item() == 8
    assert mask[[30, 31, 0, 1], 0].tolist() == [1.0] * 4, "the 4 rows around DC (FFT order)"
    points = build_operator("fourier:ratio=0.3,pattern=points,center=0.25", (1, 16, 16), generator=_gen())
    assert points.measurement_mask().sum().item() == round(0.3 * 256)
    assert points.measurement_mask()[0, 0, [0, 1, 15]][:, [0, 1, 15]].all()
    assert lines.params()["sampled_fraction"] == 0.25


def test_superres_non_divisible_uses_top_left_region():
    op = build_operator("superres:factor=4", (1, 18, 21))
    assert op.measurement_shape == (1, 4, 5)
    x = torch.rand(1, 1, 18, 21)
    torch.testing.assert_close(op.A(x), torch.nn.functional.avg_pool2d(x[..., :16, :20], 4))
    back = op.A_adjoint(torch.ones(1, 1, 4, 5))
    assert (back[..., 16:, :] == 0).all() and (back[..., :, 20:] == 0).all()
    with pytest.raises(MetadipError, match="at least 8×8"):
        build_operator("superres:factor=8", (1, 7, 20))


def test_gauss_filters_keep_constants():
    ones = torch.ones(1, 1, 16, 16)
    for spec in ("superres:factor=2,filter=gauss", "superres:factor=4,filter=gauss", "deblur:kernel=motion"):
        op = build_operator(spec, (1, 16, 16), generator=_gen())
        torch.testing.assert_close(op.A(ones), torch.ones_like(op.A(ones)))


def test_operator_rejects_wrong_image_size():
    op = build_operator("deblur", (1, 16, 16))
    with pytest.raises(MetadipError, match="16×16"):
        op.A(torch.rand(1, 1, 8, 8))


def test_to_device_keeps_operator():
    op = build_operator("inpaint:ratio=0.5", (1, 8, 8), generator=_gen())
    assert op.to(torch.device("cpu")) is op
    assert op.measurement_mask().device.type == "cpu"


def test_simulate_noise_only_on_measured_entries():
    x = torch.rand(1, 3, 32, 32, generator=_gen(1))
    inpaint = build_operator("inpaint:ratio=0.5,sigma=25", (3, 32, 32), generator=_gen())
    y = simulate(x, inpaint, _gen(2))
    observed = inpaint.measurement_mask().expand_as(y).bool()
    assert (y[~observed] == 0).all()
    assert (y - x)[observed].std().item() == pytest.approx(25 / 255, rel=0.1)
    fourier = build_operator("fourier:ratio=0.5,sigma=25", (3, 32, 32), generator=_gen())
    k = simulate(x, fourier, _gen(2))
    sampled = fourier.measurement_mask().expand_as(k).bool()
    assert (k[~sampled] == 0).all()
    noise = (k - fourier.A(x))[sampled]
    assert noise.abs().pow(2).mean().sqrt().item() == pytest.approx(25 / 255, rel=0.1)
    denoise = build_operator("denoise", (3, 32, 32))
    assert (simulate(x, denoise, _gen(2)) - x).std().item() == pytest.approx(25 / 255, rel=0.1)
    assert torch.equal(simulate(x, denoise, _gen(2)), simulate(x, denoise, _gen(2)))


@pytest.mark.parametrize(
    "text",
    [
        "denoise:sigma=25",
        "inpaint:ratio=0.5",
        "inpaint:ratio=0.3,holes=blocks,block=8",
        "superres:factor=4,sigma=2",
        "deblur:kernel=gauss,width=2,sigma=5",
        "deblur:kernel=motion,length=9,sigma=5",
        "fourier:ratio=0.25,sigma=5",
        " Deblur : kernel = Motion , length=9 ",
        "inpaint:ratio=0.3,sigma=5,poisson=30",
    ],
)
def test_spec_examples_parse_and_build(text):
    spec = parse_operator_spec(text)
    assert spec.name in OPERATORS
    op = build_operator(spec, (3, 32, 32), generator=_gen())
    assert parse_operator_spec(op.spec()).name == spec.name
    rebuilt = build_operator(op.spec(), (3, 32, 32), generator=_gen())
    assert rebuilt.spec() == op.spec()
    json.dumps(op.params())


def test_spec_values_are_typed_and_defaults_documented():
    spec = parse_operator_spec("inpaint:ratio=0.3,holes=blocks,block=8")
    assert spec == OperatorSpec("inpaint", {"ratio": 0.3, "holes": "blocks", "block": 8})
    assert isinstance(spec.params["block"], int)
    assert parse_operator_spec("denoise") == OperatorSpec("denoise", {})
    assert build_operator("denoise", (1, 8, 8)).sigma == 25
    assert build_operator("inpaint", (1, 8, 8)).sigma == 0
    assert build_operator("superres", (1, 8, 8)).spec() == "superres:factor=4,filter=box,sigma=0"
    assert build_operator("deblur:kernel=motion,angle=30", (1, 8, 8)).spec() == (
        "deblur:kernel=motion,length=9,angle=30,sigma=0"
    )
    text = describe_operators()
    for name, cls in OPERATORS.items():
        assert name in text and all(key in text for key in cls.keys())


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "empty operator spec"),
        ("blur:sigma=5", "unknown operator 'blur'; valid: denoise, inpaint, superres, deblur, fourier"),
        ("denoise:foo=1", "unknown key 'foo' for operator denoise; valid: sigma, poisson"),
        ("fourier:poisson=10", "unknown key 'poisson'"),
        ("denoise:sigma=-1", "sigma must be in [0, 1020] (0-255 scale)"),
        ("denoise:sigma=abc", "sigma must be in [0, 1020]"),
        ("inpaint:ratio=0", "ratio must be in (0, 1)"),
        ("inpaint:ratio=1", "ratio must be in (0, 1)"),
        ("inpaint:ratio=1.5", "ratio must be in (0, 1)"),
        ("inpaint:ratio=nan", "ratio must be in (0, 1)"),
        ("inpaint:holes=stars", "holes must be one of pixels, blocks, file"),
        ("inpaint:block=4", "block applies only with holes=blocks"),
        ("superres:factor=0", "factor must be an integer >= 2"),
        ("superres:factor=2.5", "factor must be an integer >= 2"),
        ("superres:factor=-4", "factor must be an integer >= 2"),
        ("deblur:width=0", "width must be > 0"),
        ("deblur:kernel=motion,width=2", "width applies only with kernel=gauss"),
        ("denoise:poisson=0", "poisson must be > 0"),
        ("denoise:sigma", "malformed"),
        ("denoise:", "malformed"),
        ("denoise:sigma=1,", "malformed"),
        ("denoise:=3", "malformed"),
        ("denoise:sigma=1,sigma=2", "given twice"),
    ],
)
def test_bad_specs_raise_one_line_errors(text, fragment):
    with pytest.raises(MetadipError) as info:
        parse_operator_spec(text)
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("spec", "kwargs", "fragment"),
    [
        (OperatorSpec("superres", {"factor": 2.5}), {}, "integer >= 2"),
        (OperatorSpec("inpaint", {"ratio": 1.0}), {}, "(0, 1)"),
        ("inpaint:holes=file", {}, "needs a mask file (--mask)"),
        ("deblur:kernel=file", {}, "needs a kernel file (--kernel)"),
        ("fourier:pattern=file", {}, "needs a mask file"),
        ("deblur", {"mask": torch.ones(8, 8)}, "takes no mask"),
        ("inpaint", {"kernel": torch.ones(3, 3)}, "takes no kernel"),
        ("inpaint", {"mask": torch.ones(4, 4)}, "expected 8×8"),
        ("inpaint", {"mask": torch.zeros(8, 8)}, "observes no pixel"),
        ("inpaint:ratio=0.5", {"mask": torch.ones(8, 8)}, "ratio applies only with holes=pixels|blocks"),
        ("deblur", {"kernel": -torch.ones(3, 3)}, "non-negative"),
        ("deblur", {"kernel": torch.ones(9, 3)}, "larger than"),
        ("deblur", {"kernel": torch.ones(1, 3, 3)}, "2-D"),
    ],
)
def test_bad_builds_raise(spec, kwargs, fragment):
    with pytest.raises(
        MetadipError, match=fragment.replace("(", r"\(").replace(")", r"\)").replace("|", r"\|")
    ):
        build_operator(spec, (1, 8, 8), **kwargs)


def test_mask_files(tmp_path):
    mask = (np.arange(48).reshape(6, 8) % 3 != 0).astype(np.uint8)
    iio.imwrite(tmp_path / "m.png", mask * 255)
    np.save(tmp_path / "m.npy", mask.astype(bool))
    iio.imwrite(tmp_path / "rgb.png", np.stack([mask * 255, mask * 0, mask * 0], axis=-1))
    for name in ("m.png", "m.npy", "rgb.png"):
        loaded = load_mask(tmp_path / name, (6, 8))
        assert loaded.shape == (1, 1, 6, 8) and torch.equal(loaded[0, 0], torch.from_numpy(mask).float())
    op = build_operator("inpaint", (3, 6, 8), mask=load_mask(tmp_path / "m.png", (6, 8)))
    assert op.spec() == "inpaint:holes=file,sigma=0"
    np.save(tmp_path / "nan.npy", np.where(mask, np.nan, 0.0))
    np.save(tmp_path / "cube.npy", np.ones((2, 6, 8)))
    (tmp_path / "broken.png").write_bytes(b"not a png")
    (tmp_path / "m.txt").write_text("1 0")
    bad = {
        "m.png": ((7, 8), "expected 7×8"),
        "nan.npy": ((6, 8), "finite"),
        "cube.npy": ((6, 8), "2-D"),
        "broken.png": ((6, 8), "cannot read"),
        "m.txt": ((6, 8), ".png or .npy"),
        "missing.npy": ((6, 8), "not found"),
    }
    for name, (hw, fragment) in bad.items():
        with pytest.raises(MetadipError, match=fragment):
            load_mask(tmp_path / name, hw)


def test_kernel_files(tmp_path):
    kernel = np.array([[0, 1, 2, 1], [1, 4, 8, 4], [0, 1, 2, 1]], dtype=np.float64)
    np.save(tmp_path / "k.npy", kernel)
    iio.imwrite(tmp_path / "k.png", (kernel * 30).astype(np.uint8))
    for name in ("k.npy", "k.png"):
        loaded = load_kernel(tmp_path / name)
        torch.testing.assert_close(loaded, torch.from_numpy(kernel / kernel.sum()).float())
    op = build_operator("deblur", (1, 8, 8), kernel=load_kernel(tmp_path / "k.npy"))
    assert op.spec() == "deblur:kernel=file,sigma=0"
    np.save(tmp_path / "neg.npy", -kernel)
    np.save(tmp_path / "inf.npy", np.where(kernel > 1, np.inf, kernel))
    np.save(tmp_path / "zero.npy", kernel * 0)
    np.save(tmp_path / "flat.npy", kernel.ravel())
    np.save(tmp_path / "complex.npy", kernel.astype(complex))
    for name in ("neg.npy", "inf.npy", "zero.npy", "flat.npy", "complex.npy"):
        with pytest.raises(MetadipError):
            load_kernel(tmp_path / name)
    with pytest.raises(MetadipError, match="larger than"):
        build_operator("deblur", (1, 2, 8), kernel=load_kernel(tmp_path / "k.npy"))


ARTIFACT_CASES = [
    ("denoise:sigma=15", []),
    ("inpaint:ratio=0.4,sigma=10", ["y.mask.png"]),
    ("inpaint:ratio=0.3,holes=blocks,block=4", ["y.mask.png"]),
    ("superres:factor=4,filter=gauss", []),
    ("deblur:kernel=motion,length=7,sigma=5", ["y.kernel.npy"]),
    ("deblur:kernel=gauss,width=1.5", ["y.kernel.npy"]),
    ("fourier:ratio=0.3,pattern=points,sigma=5", ["y.kspace_mask.npy"]),
]


@pytest.mark.parametrize(("spec", "extra_files"), ARTIFACT_CASES)
def test_artifacts_round_trip(tmp_path, spec, extra_files):
    op = build_operator(spec, (3, 18, 21), generator=_gen(9))
    written = save_operator_artifacts(op, tmp_path / "y.png")
    assert [p.name for p in written] == [*extra_files, "y.operator.json"]
    record = json.loads((tmp_path / "y.operator.json").read_text())
    assert record["spec"] == op.spec() and record["image_shape"] == [3, 18, 21]
    loaded = load_operator_for_measurement(tmp_path / "y.png", measurement_shape=(1, *op.measurement_shape))
    assert loaded.spec() == op.spec() and loaded.image_shape == op.image_shape
    x = torch.rand(2, 3, 18, 21, generator=_gen(1))
    assert torch.equal(loaded.A(x), op.A(x))
    if extra_files and extra_files[0].endswith(".png"):
        assert set(np.unique(iio.imread(tmp_path / extra_files[0])).tolist()) == {0, 255}


def test_artifacts_allow_noise_override_only(tmp_path):
    op = build_operator("inpaint:ratio=0.4,sigma=10", (1, 16, 16), generator=_gen())
    save_operator_artifacts(op, tmp_path / "y.png")
    loaded = load_operator_for_measurement(tmp_path / "y.png", spec="inpaint:sigma=3")
    assert loaded.sigma == 3 and torch.equal(loaded.measurement_mask(), op.measurement_mask())
    with pytest.raises(MetadipError, match="does not match inpaint"):
        load_operator_for_measurement(tmp_path / "y.png", spec="denoise")
    with pytest.raises(MetadipError, match="ratio=0.2 conflicts with ratio=0.4"):
        load_operator_for_measurement(tmp_path / "y.png", spec="inpaint:ratio=0.2")
    with pytest.raises(MetadipError, match="expects 16×16"):
        load_operator_for_measurement(tmp_path / "y.png", measurement_shape=(1, 15, 16))
    (tmp_path / "y.operator.json").write_text("{not json")
    with pytest.raises(MetadipError, match="not a readable metadip operator record"):
        load_operator_for_measurement(tmp_path / "y.png")


def test_load_without_artifacts(tmp_path):
    y_path = tmp_path / "y.png"
    with pytest.raises(MetadipError, match="--operator"):
        load_operator_for_measurement(y_path, measurement_shape=(3, 8, 8))
    superres = load_operator_for_measurement(y_path, spec="superres:factor=2", measurement_shape=(1, 3, 8, 9))
    assert superres.image_shape == (3, 16, 18)
    assert load_operator_for_measurement(y_path, spec="deblur", measurement_shape=(3, 8, 8)).name == "deblur"
    with pytest.raises(MetadipError, match="needs --mask"):
        load_operator_for_measurement(y_path, spec="inpaint:sigma=5", measurement_shape=(3, 8, 8))
    with pytest.raises(MetadipError, match="needs --mask"):
        load_operator_for_measurement(y_path, spec="fourier", measurement_shape=(3, 8, 8))
    with pytest.raises(MetadipError, match="--kernel or angle="):
        load_operator_for_measurement(y_path, spec="deblur:kernel=motion", measurement_shape=(3, 8, 8))
    np.save(tmp_path / "m.npy", np.eye(8))
    inpaint = load_operator_for_measurement(
        y_path, "inpaint:sigma=5", mask_path=tmp_path / "m.npy", measurement_shape=(3, 8, 8)
    )
    assert inpaint.spec() == "inpaint:holes=file,sigma=5"
    torch.testing.assert_close(inpaint.measurement_mask()[0, 0], torch.eye(8))
