"""The initialisations shipped in metadip/checkpoints/ (package data): they load safely, rebuild their generator
and input, keep their held-out images out of training, and are what ``--init auto`` picks."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import sample_image

from metadip import api, checkpoint, operators
from metadip.denoisers import bm3d_available

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted(p.stem for p in checkpoint.default_checkpoint_dir().glob("*.json"))
#: --init auto's denoising init: BM3D's estimate in z where the optional bm3d package imports, else SURE online.
DENOISE_INIT = "universal-slim-bm3d" if bm3d_available() else "universal-slim-sure"
GREY_DENOISE_INIT = "universal-slim-bm3d-grey" if bm3d_available() else checkpoint.DEFAULT_GREY_INIT


def test_the_universal_init_is_shipped():
    assert checkpoint.DEFAULT_INIT in SHIPPED and checkpoint.DEFAULT_GREY_INIT in SHIPPED


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_checkpoint_has_its_recipe_and_model_card(name):
    """Every shipped init can be retrained from pretrain/NAME.toml and is described in its model card
    (metadip/checkpoints/README.md)."""
    from metadip.pretrain import PretrainConfig

    assert PretrainConfig.from_toml(ROOT / "pretrain" / f"{name}.toml").name == name
    cards = (checkpoint.default_checkpoint_dir() / "README.md").read_text(encoding="utf-8")
    assert f"\n## {name} " in cards or f"\n## {name}\n" in cards


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_checkpoint_is_self_describing(name):
    init = checkpoint.load_checkpoint(checkpoint.default_checkpoint_dir() / name)
    training = init.training
    assert set(training["held_out_images"]).isdisjoint(training["train_images"])
    if training["steps"] == 0:  # an untrained design (offset-inpaint: PyTorch's init around an estimate)
        assert training["train_images"] == [] and "init_from" not in training and "no meta-training" in init.card
    else:
        assert training["wall_seconds"] > 0
    for key in ("optimizer", "lr", "ema", "iterations", "stop"):
        assert key in init.inner
    net = init.build()
    assert sum(p.numel() for p in net.parameters()) == init.sidecar["num_parameters"]
    assert name in dict(checkpoint.list_checkpoints())


def test_domain_inits_are_documented_choices_never_auto(monkeypatch):
    """The phantom inits (MRI-like partial Fourier, grey and complex) are chosen by name only: auto cannot tell a
    phantom from a photograph, and on held-out complex phantoms random init peaks higher."""
    monkeypatch.delenv("METADIP_CHECKPOINTS", raising=False)
    assert {
        "phantom-fourier",
        "phantom-fourier-complex",
        "phantom-fourier-reptile-resample",
        "phantom-fourier-reptile-resample-horizon",
        "phantom-fourier-complex-reptile",
    } <= set(SHIPPED)
    for channels, expected in ((1, None), (2, None)):  # no shipped init for photographs under partial Fourier
        op = operators.build_operator("fourier:ratio=0.25", (channels, 32, 32), generator=torch.Generator())
        assert checkpoint.shipped_init_for(channels, operator=op) == expected
    init = checkpoint.load_checkpoint("phantom-fourier-complex")
    assert init.arch_config["out_channels"] == 2 and init.training["init_from"]["converted"] == "grey-to-complex"


def test_the_fixed_z_phantom_init_is_the_random_arms_network_at_its_training_size():
    """phantom-fourier-complex-reptile: the random arm's two-channel network, noise z and recipe but a shorter
    output EMA (0.9: the paper's 0.99 trails the init's fast climb, research log 68); its fixed z is stored at 64 px,
    so another size is a one-line error."""
    from metadip.errors import MetadipError

    name = "phantom-fourier-complex-reptile"
    init = checkpoint.load_checkpoint(name)
    assert init.training["algorithm"] == "reptile" and init.z is not None and tuple(init.z.shape[-2:]) == (64, 64)
    assert init.recipe.lr == pytest.approx(0.01) and init.recipe.ema == pytest.approx(0.9)
    generator = torch.Generator().manual_seed(0)
    for size in (64, 32):
        x = torch.rand(1, 2, size, size, generator=generator)
        op = operators.build_operator("fourier:ratio=0.25,sigma=5", (2, size, size), generator=generator)
        y = operators.simulate(x, op, generator)
        if size == 64:
            assert api.reconstruct(y, op, init=name, iterations=2, stop="budget").image.shape == x.shape
        else:
            with pytest.raises(MetadipError, match="fixed input of shape"):
                api.reconstruct(y, op, init=name, iterations=2, stop="budget")


@pytest.mark.parametrize(
    ("name", "inner_steps", "parent"),
    [
        ("phantom-fourier-reptile-resample", 100, None),
        ("phantom-fourier-reptile-resample-horizon", 200, "phantom-fourier-reptile-resample"),
    ],
)
def test_the_resample_phantom_inits_store_no_z_and_serve_any_size(name, inner_steps, parent):
    """phantom-fourier-reptile-resample: Reptile with a fresh z per meta-training task (research log 76), so nothing
    but θ0 is stored and online DIP draws z from the recipe at the picture's size: sizes other than its 64 px
    training size work (a fixed-z init refuses them). Its continuation over K 100-200 (log 80) keeps all of that
    and names the shipped init it started from."""
    init = checkpoint.load_checkpoint(name)
    assert init.training["algorithm"] == "reptile" and init.z is None and init.sidecar["z_mode"] == "resample"
    assert init.recipe.lr == pytest.approx(0.01) and init.recipe.ema == pytest.approx(0.9)
    assert init.sidecar["inner"]["meta_inner_steps"] == inner_steps
    assert not init.recommended_for  # a documented choice, never auto
    started = init.training.get("init_from")
    if parent is None:
        assert started is None
    else:
        assert started["name"] == parent
        assert started["sha256"] == checkpoint.load_checkpoint(parent).sidecar["sha256"]
    generator = torch.Generator().manual_seed(0)
    for size in (32, 48):
        x = torch.rand(1, 1, size, size, generator=generator)
        op = operators.build_operator("fourier:ratio=0.25,sigma=5", (1, size, size), generator=generator)
        y = operators.simulate(x, op, generator)
        result = api.reconstruct(y, op, init=name, iterations=2, stop="budget")
        assert result.image.shape == x.shape and torch.isfinite(result.image).all()


def test_auto_uses_the_universal_init_for_rgb_and_the_grey_init_for_grey(monkeypatch):
    monkeypatch.delenv("METADIP_CHECKPOINTS", raising=False)
    x = sample_image("astronaut", 24)
    generator = torch.Generator().manual_seed(0)
    op = operators.build_operator("superres:factor=2", x.shape[1:], generator=generator)
    y = operators.simulate(x, op, generator)
    result = api.reconstruct(y, op, iterations=3, stop="budget", device="cpu", reference=x)
    assert result.init == checkpoint.DEFAULT_INIT and result.image.shape == x.shape
    holes = operators.build_operator("inpaint:ratio=0.5", x.shape[1:], generator=generator)
    filled = api.reconstruct(operators.simulate(x, holes, generator), holes, iterations=3, stop="budget")
    assert filled.init == "offset-inpaint" and filled.image.shape == x.shape
    grey = x.mean(dim=1, keepdim=True)
    op1 = operators.build_operator("denoise:sigma=25", grey.shape[1:], generator=generator)
    result1 = api.reconstruct(operators.simulate(grey, op1, generator), op1, iterations=2, stop="budget")
    assert result1.init == GREY_DENOISE_INIT and result1.image.shape == grey.shape


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("denoise:sigma=25", DENOISE_INIT),
        ("denoise:sigma=10", DENOISE_INIT),
        ("denoise:poisson=30", DENOISE_INIT),  # BM3D through the Anscombe transform / SURE as PURE
        ("inpaint:ratio=0.5", "offset-inpaint"),  # random DIP's network around a smooth fill (not meta-learned)
        ("inpaint:ratio=0.5,sigma=5", "offset-inpaint"),
        ("inpaint:holes=blocks,ratio=0.4", None),  # every shipped init avoids block holes: random init
        ("superres:factor=4", "universal-slim-superres"),
        ("superres:factor=4,filter=gauss,sigma=5", "universal-slim-superres"),
        ("superres:factor=2", checkpoint.DEFAULT_INIT),
        ("deblur:kernel=gauss,width=2", "universal-slim-tikhonov"),
        ("deblur:kernel=motion,length=9", "universal-slim-tikhonov"),
        ("fourier:ratio=0.3", None),  # no init saw Fourier, and the universal one peaks ~3 dB lower: random init
    ],
)
def test_auto_rule_of_the_shipped_inits(monkeypatch, spec, expected):
    """The per-operator choice the README documents (recommended_for / avoid_for in the shipped sidecars)."""
    monkeypatch.delenv("METADIP_CHECKPOINTS", raising=False)
    op = operators.build_operator(spec, (3, 64, 64), generator=torch.Generator().manual_seed(0))
    assert checkpoint.shipped_init_for(3, operator=op) == expected


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("denoise:sigma=25", GREY_DENOISE_INIT),
        ("denoise:poisson=30", GREY_DENOISE_INIT),
        ("inpaint:ratio=0.5", "offset-inpaint-grey"),  # offset-inpaint's one-channel twin (not a conversion)
        ("inpaint:ratio=0.5,sigma=5", "offset-inpaint-grey"),
        ("inpaint:holes=blocks,ratio=0.4", None),
        ("superres:factor=4", "universal-slim-superres-grey"),
        ("superres:factor=2", checkpoint.DEFAULT_GREY_INIT),
        ("deblur:kernel=gauss,width=2", "universal-slim-tikhonov-grey"),
        ("deblur:kernel=motion,length=9", "universal-slim-tikhonov-grey"),
        ("fourier:ratio=0.3", None),
    ],
)
def test_auto_rule_of_the_shipped_grey_inits(monkeypatch, spec, expected):
    """Grey pictures get the grey twins of the RGB inits, by the same rules; never an RGB init."""
    monkeypatch.delenv("METADIP_CHECKPOINTS", raising=False)
    op = operators.build_operator(spec, (1, 64, 64), generator=torch.Generator().manual_seed(0))
    assert checkpoint.shipped_init_for(1, operator=op) == expected
    assert checkpoint.shipped_init_for_spec(spec, channels=1) == expected
    if expected is not None:
        assert checkpoint.load_checkpoint(expected).arch_config["out_channels"] == 1


def test_grey_inits_were_converted_from_their_rgb_originals():
    for grey, colour in [
        (checkpoint.DEFAULT_GREY_INIT, checkpoint.DEFAULT_INIT),
        ("universal-slim-tikhonov-grey", "universal-slim-tikhonov"),
        ("universal-slim-superres-grey", "universal-slim-superres"),
    ]:
        source = checkpoint.load_checkpoint(colour)
        init = checkpoint.load_checkpoint(grey)
        assert init.training["init_from"] == {
            "name": colour,
            "sha256": source.sidecar["sha256"],
            "converted": "rgb-to-grey",
        }
        assert init.input_recipe.estimate == source.input_recipe.estimate
        assert init.avoid_for == source.avoid_for and init.recommended_for == source.recommended_for


def test_offset_inpaint_grey_is_the_rgb_design_with_one_channel():
    """The grey offset init is not a conversion (there are no trained weights to convert): the same design, recipe
    and auto rule as offset-inpaint, drawn for one channel."""
    colour, grey = checkpoint.load_checkpoint("offset-inpaint"), checkpoint.load_checkpoint("offset-inpaint-grey")
    assert grey.arch_config["out_channels"] == 1 and colour.arch_config["out_channels"] == 3
    assert grey.arch_config["offset"] and grey.noise_channels == colour.noise_channels
    same = ("in_channels", "out_channels")
    assert {k: v for k, v in grey.arch_config.items() if k not in same} == {
        k: v for k, v in colour.arch_config.items() if k not in same
    }
    assert grey.inner == colour.inner and grey.input_recipe.lowpass == colour.input_recipe.lowpass
    assert grey.avoid_for == colour.avoid_for and grey.recommended_for == colour.recommended_for
    assert grey.training["steps"] == 0 and grey.training["train_images"] == []


def test_shipped_inits_are_package_data():
    """The inits live inside the package (found from metadip's own location, so a wheel install has them) and
    pyproject.toml ships every file of that folder."""
    import metadip

    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib

    assert checkpoint.default_checkpoint_dir() == Path(metadip.__file__).resolve().parent / "checkpoints"
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"][
        "package-data"
    ]["metadip"]
    package = Path(metadip.__file__).resolve().parent
    shipped = {p.relative_to(package) for p in checkpoint.default_checkpoint_dir().iterdir() if p.is_file()}
    covered = {p.relative_to(package) for pattern in patterns for p in package.glob(pattern)}
    assert shipped and shipped <= covered
