"""Checkpoints: round trip, name resolution, and refusal of every kind of bad file (never unpickling)."""

from __future__ import annotations

import json
import pickle

import pytest
import torch

from metadip.checkpoint import (
    FORMAT_VERSION,
    Z_KEY,
    fixed_input_inits,
    list_checkpoints,
    load_checkpoint,
    random_init,
    save_checkpoint,
)
from metadip.errors import MetadipError
from metadip.generators import InputRecipe, build_generator

TINY = {
    "kind": "skip",
    "name": "tiny",
    "in_channels": 4,
    "channels_down": [4, 4],
    "channels_up": [4, 4],
    "channels_skip": [2, 2],
}


def tiny_net(seed=0):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_generator(TINY, out_channels=3)


def save_tiny(path_stem, z=None, **kw):
    net = tiny_net()
    args = dict(
        arch_config=net.config,
        input_recipe=InputRecipe(channels=4, seed=3),
        inner={
            "optimizer": "adam",
            "lr": 0.01,
            "reg_noise_std": 1 / 30,
            "ema": 0.99,
            "iterations": 500,
            "stop": "wmv",
        },
        training={
            "algorithm": "maml",
            "steps": 3,
            "train_images": ["coins"],
            "held_out_images": ["camera"],
            "tasks": {"weights": {"denoise": 1.0}},
        },
    )
    args.update(kw)
    save_checkpoint(path_stem, net, z=z, **args)
    return net


def test_round_trip(tmp_path):
    net = save_tiny(tmp_path / "init")
    init = load_checkpoint(tmp_path / "init")
    assert init.name == "init" and init.z is None and init.z_mode == "resample"
    assert init.input_recipe == InputRecipe(channels=4, seed=3)
    assert init.inner["lr"] == 0.01 and init.training["held_out_images"] == ["camera"]
    for key, value in net.state_dict().items():
        assert torch.equal(init.state_dict[key], value)
    rebuilt = init.build()
    z = torch.rand(1, 4, 16, 16)
    torch.testing.assert_close(rebuilt(z), net(z))
    meta = json.loads((tmp_path / "init.json").read_text())
    assert meta["format_version"] == FORMAT_VERSION and len(meta["sha256"]) == 64
    assert meta["metadip_version"] and meta["num_parameters"] == sum(p.numel() for p in net.parameters())
    for suffix in (".json", ".safetensors"):  # with either extension
        assert load_checkpoint(str(tmp_path / "init") + suffix).name == "init"


def test_equal_weights_export_to_equal_bytes(tmp_path):
    """The weights file's SHA-256 identifies the weights: safetensors writes its metadata from a hash map whose order
    changes between writers (a re-export of the same θ0 once gave another hash), so the header is written
    canonically (sorted keys, padded to 8 bytes) and the file still loads."""
    hashes = set()
    z = torch.rand(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    for i in range(8):
        net = save_tiny(tmp_path / f"copy{i}" / "init", z=z)
        data = (tmp_path / f"copy{i}" / "init.safetensors").read_bytes()
        length = int.from_bytes(data[:8], "little")
        assert (8 + length) % 8 == 0
        header = json.loads(data[8 : 8 + length])
        assert list(header["__metadata__"]) == sorted(header["__metadata__"]) and list(header) == sorted(header)
        hashes.add(json.loads((tmp_path / f"copy{i}" / "init.json").read_text())["sha256"])
        init = load_checkpoint(tmp_path / f"copy{i}" / "init")
        assert init.z is not None
        for key, value in net.state_dict().items():
            assert torch.equal(init.state_dict[key], value)
    assert len(hashes) == 1


def test_fixed_z_round_trip(tmp_path):
    z = torch.rand(1, 4, 16, 16)
    save_tiny(tmp_path / "fixed", z=z)
    init = load_checkpoint(tmp_path / "fixed")
    assert init.z_mode == "fixed" and torch.equal(init.z, z) and Z_KEY not in init.state_dict


def test_a_fixed_z_init_refused_for_a_picture_size_names_its_siblings_for_that_size(tmp_path, monkeypatch):
    from metadip import api, operators

    monkeypatch.setenv("METADIP_CHECKPOINTS", str(tmp_path))
    save_tiny(tmp_path / "at16", z=torch.rand(1, 4, 16, 16))
    save_tiny(tmp_path / "at32", z=torch.rand(1, 4, 32, 32))
    save_tiny(tmp_path / "any-size")  # no fixed z: fits every size, never a "sibling"
    assert fixed_input_inits((4, 32, 32), 3) == ["at32"]
    assert fixed_input_inits((4, 32, 32), 1) == [] and fixed_input_inits((4, 8, 8), 3) == []
    generator = torch.Generator().manual_seed(0)
    op = operators.build_operator("denoise:sigma=25", (3, 32, 32), generator=generator)
    y = operators.simulate(torch.rand(1, 3, 32, 32, generator=generator), op, generator)
    refusal = r"fixed input of shape \(4, 16, 16\).*inits stored for 32×32 pictures: at32$"
    with pytest.raises(MetadipError, match=refusal):
        api.reconstruct(y, op, init="at16", iterations=1, stop="budget")
    assert api.reconstruct(y, op, init="at32", iterations=1, stop="budget").image.shape == (1, 3, 32, 32)


def test_bare_name_resolves_against_env_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("METADIP_CHECKPOINTS", str(tmp_path))
    save_tiny(tmp_path / "mine")
    assert load_checkpoint("mine").name == "mine"
    names = dict(list_checkpoints())
    assert "mine" in names and "maml" in names["mine"]
    with pytest.raises(MetadipError, match="unknown checkpoint 'nope'"):
        load_checkpoint("nope")


def test_missing_weights_file(tmp_path):
    save_tiny(tmp_path / "c")
    (tmp_path / "c.safetensors").unlink()
    with pytest.raises(MetadipError, match="missing"):
        load_checkpoint(tmp_path / "c")


def test_missing_sidecar(tmp_path):
    save_tiny(tmp_path / "c")
    (tmp_path / "c.json").unlink()
    with pytest.raises(MetadipError, match="sidecar"):
        load_checkpoint(tmp_path / "c.safetensors")


def test_truncated_weights(tmp_path):
    save_tiny(tmp_path / "c")
    path = tmp_path / "c.safetensors"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(MetadipError, match="corrupt"):
        load_checkpoint(tmp_path / "c")


def test_truncated_weights_with_matching_hash_is_still_refused(tmp_path):
    import hashlib

    save_tiny(tmp_path / "c")
    path = tmp_path / "c.safetensors"
    data = path.read_bytes()[:100]
    path.write_bytes(data)
    meta = json.loads((tmp_path / "c.json").read_text())
    meta["sha256"] = hashlib.sha256(data).hexdigest()
    (tmp_path / "c.json").write_text(json.dumps(meta))
    with pytest.raises(MetadipError, match="safetensors"):
        load_checkpoint(tmp_path / "c")


def test_sha_mismatch(tmp_path):
    save_tiny(tmp_path / "c")
    path = tmp_path / "c.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(MetadipError, match="sha256"):
        load_checkpoint(tmp_path / "c")


def test_truncated_sidecar(tmp_path):
    save_tiny(tmp_path / "c")
    sidecar = tmp_path / "c.json"
    sidecar.write_text(sidecar.read_text()[:50])
    with pytest.raises(MetadipError, match="JSON"):
        load_checkpoint(tmp_path / "c")


@pytest.mark.parametrize("version", [2, None, "1"])
def test_unknown_format_version(tmp_path, version):
    save_tiny(tmp_path / "c")
    meta = json.loads((tmp_path / "c.json").read_text())
    meta["format_version"] = version
    (tmp_path / "c.json").write_text(json.dumps(meta))
    with pytest.raises(MetadipError, match="format_version"):
        load_checkpoint(tmp_path / "c")


def test_missing_sidecar_key(tmp_path):
    save_tiny(tmp_path / "c")
    meta = json.loads((tmp_path / "c.json").read_text())
    del meta["inner"]
    (tmp_path / "c.json").write_text(json.dumps(meta))
    with pytest.raises(MetadipError, match="inner"):
        load_checkpoint(tmp_path / "c")


def test_weights_that_do_not_fit_the_architecture(tmp_path):
    net = tiny_net()
    other = {**TINY, "channels_down": [8, 8], "channels_up": [8, 8]}
    save_checkpoint(tmp_path / "c", net, arch_config=other, input_recipe=InputRecipe(channels=4), inner={}, training={})
    with pytest.raises(MetadipError, match="does not match its architecture"):
        load_checkpoint(tmp_path / "c")


def test_missing_tensor(tmp_path):
    net = tiny_net()
    state = net.state_dict()
    state.pop(next(iter(state)))
    save_checkpoint(
        tmp_path / "c",
        state,
        arch_config=net.config,
        input_recipe=InputRecipe(channels=4),
        inner={},
        training={},
    )
    with pytest.raises(MetadipError, match="Missing key"):
        load_checkpoint(tmp_path / "c")


class _Planted:
    """Unpickling this would create a marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_planted_pickle_is_refused_and_never_executed(tmp_path):
    marker = tmp_path / "PWNED"
    payload = pickle.dumps(_Planted(marker))
    save_tiny(tmp_path / "c")
    # 1) a pickle in place of the weights, with the sidecar's hash updated to match
    import hashlib

    (tmp_path / "c.safetensors").write_bytes(payload)
    meta = json.loads((tmp_path / "c.json").read_text())
    meta["sha256"] = hashlib.sha256(payload).hexdigest()
    (tmp_path / "c.json").write_text(json.dumps(meta))
    with pytest.raises(MetadipError):
        load_checkpoint(tmp_path / "c")
    # 2) a pickle as the sidecar
    (tmp_path / "d.json").write_bytes(payload)
    (tmp_path / "d.safetensors").write_bytes(payload)
    with pytest.raises(MetadipError):
        load_checkpoint(tmp_path / "d")
    # 3) a pickle as a training state for --resume (torch.load with weights_only=True)
    from metadip.pretrain import _load_state

    (tmp_path / "state.pt").write_bytes(payload)
    with pytest.raises(MetadipError):
        _load_state(tmp_path / "state.pt")
    assert not marker.exists()


def test_random_init_is_seeded_and_uses_the_dip_recipe():
    a = random_init("skip-slim", out_channels=3, seed=5)
    b = random_init("skip-slim", out_channels=3, seed=5)
    c = random_init("skip-slim", out_channels=3, seed=6)
    state = torch.get_rng_state()
    assert all(torch.equal(a.state_dict[k], b.state_dict[k]) for k in a.state_dict)
    assert not all(torch.equal(a.state_dict[k], c.state_dict[k]) for k in a.state_dict)
    assert torch.equal(state, torch.get_rng_state())
    assert a.input_recipe.kind == "uniform" and a.input_recipe.scale == pytest.approx(0.1)
    assert a.input_recipe.channels == 32
    assert a.inner["optimizer"] == "adam" and a.inner["lr"] == pytest.approx(0.01)
    assert a.inner["reg_noise_std"] == pytest.approx(1 / 30) and a.z is None
    assert a.build().config["name"] == "skip-slim"


def test_auto_init_prefers_the_universal_init_and_falls_back_to_random(tmp_path, monkeypatch):
    from metadip import api, checkpoint

    monkeypatch.setattr(checkpoint, "default_checkpoint_dir", lambda: tmp_path / "none")
    monkeypatch.setenv("METADIP_CHECKPOINTS", str(tmp_path))
    assert checkpoint.shipped_init_for(3) is None
    assert api.resolve_init_name("auto", arch=None, out_channels=3) == "random"
    save_tiny(tmp_path / "aaa-other")
    save_tiny(tmp_path / checkpoint.DEFAULT_INIT)
    assert checkpoint.shipped_init_for(3) == checkpoint.DEFAULT_INIT  # preferred over the first by name
    assert checkpoint.shipped_init_for(1) is None  # no grey init: random
    assert checkpoint.shipped_init_for(3, arch="skip") is None  # no init of that preset: random
    assert api.resolve_init_name("auto", arch="tiny", out_channels=3) == checkpoint.DEFAULT_INIT
    assert api.resolve_init_name("random", arch=None, out_channels=3) == "random"
    assert api.load_init("auto", arch=None, out_channels=1, seed=0).name == "random"


def test_auto_init_prefers_an_init_recommended_for_the_operator(tmp_path, monkeypatch):
    from metadip import api, checkpoint, operators

    def op(spec):
        return operators.build_operator(spec, (3, 16, 16))

    monkeypatch.setattr(checkpoint, "default_checkpoint_dir", lambda: tmp_path / "shipped")
    monkeypatch.setenv("METADIP_CHECKPOINTS", str(tmp_path / "mine"))
    save_tiny(tmp_path / "shipped" / checkpoint.DEFAULT_INIT)
    save_tiny(tmp_path / "shipped" / "zz-deblur", recommended_for=["deblur", "superres:factor=4"])
    assert load_checkpoint("zz-deblur").recommended_for == ("deblur", "superres:factor=4")
    assert load_checkpoint(checkpoint.DEFAULT_INIT).recommended_for == ()
    assert checkpoint.shipped_init_for(3) == checkpoint.DEFAULT_INIT  # no operator: the universal default
    assert checkpoint.shipped_init_for(3, operator=op("denoise")) == checkpoint.DEFAULT_INIT
    assert checkpoint.shipped_init_for(3, operator=op("deblur:kernel=motion,length=5")) == "zz-deblur"
    # a spec with parameters matches only operators with those values, whatever the others
    assert checkpoint.shipped_init_for(3, operator=op("superres:factor=4,filter=gauss,sigma=5")) == "zz-deblur"
    assert checkpoint.shipped_init_for(3, operator=op("superres:factor=2")) == checkpoint.DEFAULT_INIT
    assert api.resolve_init_name("auto", arch=None, out_channels=3, operator=op("superres")) == "zz-deblur"
    assert api.load_init("auto", arch=None, out_channels=3, seed=0, operator=op("deblur")).name == "zz-deblur"
    assert checkpoint.shipped_init_for(1, operator=op("deblur")) is None  # recommended but does not fit: random
    # reconstruct passes its operator
    blur = op("deblur:kernel=gauss,width=1")
    y = blur.A(torch.rand(1, 3, 16, 16))
    assert api.reconstruct(y, blur, iterations=1, stop="budget", progress=False).init == "zz-deblur"
    # a user's own folder still comes first, even when it recommends nothing
    save_tiny(tmp_path / "mine" / "my-init")
    assert checkpoint.shipped_init_for(3, operator=blur) == "my-init"
    assert any("auto picks it for deblur, superres:factor=4" in card for _, card in checkpoint.list_checkpoints())


def test_auto_init_skips_an_init_that_avoids_the_operator(tmp_path, monkeypatch):
    from metadip import api, checkpoint, operators

    def op(spec):
        return operators.build_operator(spec, (3, 16, 16), generator=torch.Generator().manual_seed(0))

    monkeypatch.setattr(checkpoint, "default_checkpoint_dir", lambda: tmp_path / "shipped")
    monkeypatch.delenv("METADIP_CHECKPOINTS", raising=False)
    save_tiny(tmp_path / "shipped" / checkpoint.DEFAULT_INIT, avoid_for=["inpaint:holes=blocks"])
    assert load_checkpoint(checkpoint.DEFAULT_INIT).avoid_for == ("inpaint:holes=blocks",)
    blocks, pixels = op("inpaint:holes=blocks,ratio=0.3"), op("inpaint:ratio=0.3")
    assert checkpoint.shipped_init_for(3, operator=pixels) == checkpoint.DEFAULT_INIT
    assert checkpoint.shipped_init_for(3, operator=blocks) is None  # the only init avoids it: random init
    assert api.load_init("auto", arch=None, out_channels=3, seed=0, operator=blocks).name == "random"
    y = blocks.A(torch.rand(1, 3, 16, 16))
    assert api.reconstruct(y, blocks, iterations=1, stop="budget", progress=False).init == "random"
    save_tiny(tmp_path / "shipped" / "other")
    assert checkpoint.shipped_init_for(3, operator=blocks) == "other"  # the next init that does not avoid it
    assert checkpoint.shipped_init_for(3) == checkpoint.DEFAULT_INIT  # without an operator nothing is avoided
    assert any("never for inpaint:holes=blocks" in card for _, card in checkpoint.list_checkpoints())
    # naming the init explicitly still uses it
    assert api.load_init(checkpoint.DEFAULT_INIT, arch=None, out_channels=3, seed=0, operator=blocks).name == (
        checkpoint.DEFAULT_INIT
    )


def test_auto_init_keeps_a_sure_init_for_poisson_noise(tmp_path, monkeypatch):
    """An init run online with SURE is auto's pick for Poisson measurements too (SURE becomes PURE there)."""
    from metadip import checkpoint, operators

    def op(spec):
        return operators.build_operator(spec, (3, 16, 16), generator=torch.Generator().manual_seed(0))

    monkeypatch.setattr(checkpoint, "default_checkpoint_dir", lambda: tmp_path / "shipped")
    monkeypatch.delenv("METADIP_CHECKPOINTS", raising=False)
    save_tiny(tmp_path / "shipped" / checkpoint.DEFAULT_INIT)
    inner = {"optimizer": "adam", "lr": 0.01, "ema": 0.99, "iterations": 500, "stop": "wmv", "loss": "sure"}
    save_tiny(tmp_path / "shipped" / "zz-sure", recommended_for=["denoise"], inner=inner)
    assert checkpoint.shipped_init_for(3, operator=op("denoise:sigma=25")) == "zz-sure"
    assert checkpoint.shipped_init_for(3, operator=op("denoise:poisson=30")) == "zz-sure"
    assert checkpoint.shipped_init_for(3, operator=op("denoise:sigma=5,poisson=30")) == "zz-sure"
    assert checkpoint.shipped_init_for(3, operator=op("inpaint:ratio=0.5")) == checkpoint.DEFAULT_INIT


def test_auto_init_skips_a_bm3d_init_when_the_package_is_missing(tmp_path, monkeypatch):
    """An init whose z holds BM3D's estimate is auto's pick for denoising (Gaussian or Poisson noise) only where
    ``bm3d`` imports."""
    from metadip import checkpoint, operators

    op = operators.build_operator("denoise:sigma=25", (3, 16, 16), generator=torch.Generator().manual_seed(0))
    monkeypatch.setattr(checkpoint, "default_checkpoint_dir", lambda: tmp_path / "shipped")
    monkeypatch.delenv("METADIP_CHECKPOINTS", raising=False)
    save_tiny(tmp_path / "shipped" / checkpoint.DEFAULT_INIT)
    save_tiny(tmp_path / "shipped" / "zz-bm3d", recommended_for=["denoise"], input_recipe=InputRecipe(
        channels=4, seed=3, estimate="bm3d"))
    monkeypatch.setattr(checkpoint, "bm3d_available", lambda: True)
    assert checkpoint.shipped_init_for(3, operator=op) == "zz-bm3d"
    poisson = operators.build_operator("denoise:poisson=30", (3, 16, 16), generator=torch.Generator().manual_seed(0))
    assert checkpoint.shipped_init_for(3, operator=poisson) == "zz-bm3d"  # through the Anscombe transform
    monkeypatch.setattr(checkpoint, "bm3d_available", lambda: False)
    assert checkpoint.shipped_init_for(3, operator=op) == checkpoint.DEFAULT_INIT


def test_auto_init_prefers_inits_trained_on_the_family(tmp_path, monkeypatch):
    from metadip import checkpoint, operators

    def op(spec):
        return operators.build_operator(spec, (3, 16, 16), generator=torch.Generator().manual_seed(0))

    def trained_on(*families):
        return {"algorithm": "maml", "steps": 1, "families": list(families), "train_images": [], "held_out_images": []}

    monkeypatch.setattr(checkpoint, "default_checkpoint_dir", lambda: tmp_path / "shipped")
    monkeypatch.delenv("METADIP_CHECKPOINTS", raising=False)
    save_tiny(tmp_path / "shipped" / checkpoint.DEFAULT_INIT, training=trained_on("denoise", "inpaint"))
    save_tiny(tmp_path / "shipped" / "aa-superres", training=trained_on("superres"))
    save_tiny(tmp_path / "shipped" / "bb-blur", training=trained_on("deblur"))
    assert checkpoint.shipped_init_for(3, operator=op("denoise")) == checkpoint.DEFAULT_INIT
    assert checkpoint.shipped_init_for(3, operator=op("deblur")) == "bb-blur"  # trained on it, not recommended
    assert checkpoint.shipped_init_for(3, operator=op("superres")) == "aa-superres"
    # a family nobody was trained on: the universal default, not the first specialist by name
    assert checkpoint.shipped_init_for(3, operator=op("fourier")) == checkpoint.DEFAULT_INIT


def test_bad_recommended_for_is_refused(tmp_path):
    with pytest.raises(MetadipError, match="recommended_for: unknown operator 'blur'"):
        save_tiny(tmp_path / "a", recommended_for=["blur"])
    with pytest.raises(MetadipError, match="recommended_for: .*factor"):
        save_tiny(tmp_path / "a", recommended_for=["superres:factor=1"])
    with pytest.raises(MetadipError, match="avoid_for: unknown operator 'holes=blocks'"):
        save_tiny(tmp_path / "a", avoid_for=["holes=blocks"])
    save_tiny(tmp_path / "b")
    sidecar = tmp_path / "b.json"
    meta = json.loads(sidecar.read_text())
    sidecar.write_text(json.dumps({**meta, "recommended_for": "deblur"}))
    with pytest.raises(MetadipError, match="recommended_for must be a list of operator specs"):
        load_checkpoint(tmp_path / "b")


def test_checkpoints_command_fails_in_one_line_when_none_are_installed(tmp_path, monkeypatch):
    """A broken install (no shipped inits, nothing in $METADIP_CHECKPOINTS) is an error, not an empty listing:
    otherwise --init auto silently falls back to random init everywhere."""
    from click.testing import CliRunner

    from metadip import checkpoint
    from metadip.cli import main

    monkeypatch.setattr(checkpoint, "default_checkpoint_dir", lambda: tmp_path / "none")
    monkeypatch.setenv("METADIP_CHECKPOINTS", str(tmp_path / "empty"))
    result = CliRunner().invoke(main, ["checkpoints"])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: no checkpoints found in ")
    assert str(tmp_path / "none") in lines[0] and "METADIP_CHECKPOINTS" in lines[0]
    save_tiny(tmp_path / "empty" / "mine")
    listed = CliRunner().invoke(main, ["checkpoints"])
    assert listed.exit_code == 0 and listed.output.startswith("mine ")
