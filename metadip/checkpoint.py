"""Initialisation checkpoints: ``NAME.safetensors`` (θ0 tensors, plus the fixed input z under ``__z__`` when
the init uses one) and ``NAME.json`` (everything that rebuilds and describes it).

Sidecar keys: ``format_version``, ``name``, ``metadip_version``, ``created``, ``weights`` (file name),
``sha256`` (of the weights file), ``num_parameters``, ``arch`` (generator config: ``build_generator(arch)``
rebuilds the net), ``input`` (the :class:`InputRecipe`), ``z_mode`` (``fixed`` | ``resample`` |
``conditioned``, see :mod:`metadip.meta.inner`), ``noise_channels`` (conditioned z only), ``inner`` (the
online recipe the init expects, :meth:`metadip.online.DipRecipe.to_dict`: optimizer, lr, optional per-tensor
``lr_per_tensor``, Adam's betas / eps, reg_noise_std, ema, iterations, stop and its settings, adapt, loss;
``Init.recipe`` holds it typed), ``training`` (algorithm, task distribution, train and held-out images, steps,
wall seconds, seed, the resolved config), ``card`` (a one-line model card) and, optionally,
``recommended_for`` (operator specs — a family such as ``deblur``, or ``superres:factor=4`` — for which
``--init auto`` prefers this init over :data:`DEFAULT_INIT`; see :func:`recommends`) and ``avoid_for`` (specs
for which ``--init auto`` never picks it, e.g. where it was measured to lose clearly to random init; the next
init, or random init, is used).

Loading never unpickles: the weights are read with ``safetensors`` from bytes whose SHA-256 was checked first,
and the sidecar is JSON. Every problem (missing or truncated file, hash mismatch, unknown format version,
missing keys, weights that do not fit the architecture) is a :class:`MetadipError`.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

import metadip
from metadip.denoisers import bm3d_available
from metadip.errors import MetadipError
from metadip.fileio import atomic_write_bytes, atomic_write_json
from metadip.generators import InputRecipe, build_generator, default_input_recipe
from metadip.online import PAPER, DipRecipe
from metadip.operators import OPERATORS, build_operator, parse_operator_spec

FORMAT_VERSION = 1
Z_KEY = "__z__"
WEIGHTS_SUFFIX = ".safetensors"
SIDECAR_SUFFIX = ".json"
ENV_VAR = "METADIP_CHECKPOINTS"
#: The shipped universal initialisation that ``--init auto`` (the default) prefers when it fits.
DEFAULT_INIT = "universal-slim-long"
#: Its grey (one-channel) counterpart: auto's universal init for grey pictures.
DEFAULT_GREY_INIT = "universal-slim-grey"
#: The universal inits auto ranks before the other inits of a folder (each fits one channel count).
DEFAULT_INITS = (DEFAULT_INIT, DEFAULT_GREY_INIT)
#: How θ0's input z is made: stored, redrawn per run, or built from the measurement.
Z_MODES = ("fixed", "resample", "conditioned")
REQUIRED_KEYS = ("format_version", "name", "sha256", "arch", "input", "inner", "training")


@dataclass
class Init:
    """A starting point for DIP: architecture, weights, input recipe (and fixed z) and the online recipe."""

    name: str
    arch_config: dict
    state_dict: dict[str, Tensor]
    input_recipe: InputRecipe
    recipe: DipRecipe
    training: dict
    z: Tensor | None = None
    sidecar: dict = field(default_factory=dict)
    z_mode: str = "resample"
    path: Path | None = None
    noise_channels: int = 0  # z_mode "conditioned": noise channels appended to the back-projection
    recommended_for: tuple[str, ...] = ()  # operator specs --init auto picks this init for (see recommends)
    avoid_for: tuple[str, ...] = ()  # operator specs --init auto never picks this init for

    def build(self, device: str | torch.device = "cpu") -> nn.Module:
        """The generator holding these weights (strict load; a mismatch is a MetadipError)."""
        net = build_generator(self.arch_config)
        load_weights(net, self.state_dict, self.name)
        return net.to(device)

    @property
    def inner(self) -> dict:
        """The online recipe as the sidecar stores it (``inner``)."""
        return self.recipe.to_dict()

    @property
    def card(self) -> str:
        return str(self.sidecar.get("card") or make_card(self.name, self.arch_config, self.training))


def default_checkpoint_dir() -> Path:
    """The shipped inits: package data in ``metadip/checkpoints/``, found from the installed package (a wheel
    install finds them as an editable one does)."""
    return Path(metadip.__file__).resolve().parent / "checkpoints"


def checkpoint_dirs() -> list[Path]:
    """Where bare names are looked up: ``$METADIP_CHECKPOINTS`` (``os.pathsep``-separated) first, then the
    shipped ``metadip/checkpoints/``."""
    dirs = [Path(p) for p in os.environ.get(ENV_VAR, "").split(os.pathsep) if p.strip()]
    dirs.append(default_checkpoint_dir())
    return dirs


def export_dir() -> Path:
    """Where ``pretrain --export`` writes: the first ``$METADIP_CHECKPOINTS`` entry, else ``metadip/checkpoints/``."""
    return checkpoint_dirs()[0]


def load_weights(net: nn.Module, state_dict: dict[str, Tensor], name: str = "checkpoint") -> None:
    try:
        net.load_state_dict(state_dict, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        detail = " ".join(line.strip() for line in first[:3])
        raise MetadipError(f"checkpoint {name!r} does not match its architecture: {detail}") from None


def make_card(name: str, arch: dict, training: dict) -> str:
    algorithm = training.get("algorithm", "?")
    families = training.get("families") or sorted((training.get("tasks") or {}).get("weights", {}))
    steps = training.get("steps", "?")
    wall = training.get("wall_seconds")
    wall_text = f", {wall / 3600:.1f} h" if isinstance(wall, (int, float)) and wall > 0 else ""
    supervised = training.get("supervised_steps") or 0
    if supervised and isinstance(steps, int):
        steps_text = f"{supervised} supervised warm-start + {max(0, steps - supervised)} meta-steps"
    else:
        steps_text = f"{steps} meta-steps"
    parent = training.get("init_from")
    if isinstance(parent, dict) and parent.get("name"):
        steps_text += f" from {parent['name']}"
    return f"{arch.get('name', 'custom')} · {algorithm} · {'+'.join(families) or 'no tasks'} · {steps_text}{wall_text}"


def check_recommendations(value: Any, what: str) -> tuple[str, ...]:
    """``value`` as a tuple of operator specs — a family (``deblur``) or a family with the parameters it must
    have (``superres:factor=4``) — each checked by :func:`metadip.operators.parse_operator_spec`; a MetadipError
    naming ``what`` otherwise."""
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise MetadipError(
            f"{what} must be a list of operator specs (a family — {', '.join(OPERATORS)} — or e.g. "
            f"'superres:factor=4'), got {value!r}"
        )
    for entry in value:
        try:
            parse_operator_spec(entry)
        except MetadipError as exc:
            raise MetadipError(f"{what}: {exc}") from None
    return tuple(dict.fromkeys(str(v).strip() for v in value))


def recommends(entries: Sequence[str], operator: Any) -> bool:
    """Whether one of the specs (``recommended_for`` / ``avoid_for``) matches ``operator`` (a built operator):
    the same family and, for every parameter the spec names, the same value (``superres:factor=4`` matches any
    ×4 super-resolution, whatever its filter or noise)."""
    params = operator.params()
    for entry in entries:
        try:
            spec = parse_operator_spec(entry)
        except MetadipError:
            continue
        if spec.name == operator.name and all(params.get(k) == v for k, v in spec.params.items()):
            return True
    return False


def _check_json_serialisable(value: Any) -> Any:
    """``value`` itself, once ``json.dumps`` has accepted it (a TypeError naming the problem otherwise)."""
    try:
        json.dumps(value, allow_nan=True)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"checkpoint metadata is not JSON-serialisable: {exc}") from None
    return value


def canonical_safetensors(data: bytes) -> bytes:
    """``data`` (a safetensors file) with its JSON header written with sorted keys, so equal tensors and metadata
    give equal bytes (and SHA-256). safetensors keeps the metadata in a hash map whose order changes from one
    writer to the next; the tensors' offsets are relative to the end of the header, so only the header changes.
    The header is padded with spaces to a multiple of 8 bytes, as safetensors writes it."""
    length = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + length])
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode("utf-8")
    text += b" " * (-(8 + len(text)) % 8)
    return len(text).to_bytes(8, "little") + text + data[8 + length :]


def save_checkpoint(
    path_stem: str | os.PathLike,
    net_or_state: nn.Module | dict[str, Tensor],
    *,
    arch_config: dict,
    input_recipe: InputRecipe | dict,
    inner: DipRecipe | dict,
    training: dict,
    z: Tensor | None = None,
    z_mode: str | None = None,
    noise_channels: int = 0,
    card: str | None = None,
    recommended_for: Sequence[str] = (),
    avoid_for: Sequence[str] = (),
) -> tuple[Path, Path]:
    """Write ``path_stem.safetensors`` and ``path_stem.json`` (each atomically; weights first, so a sidecar
    never points at weights that are not there yet). ``inner``: the online recipe (a dict is read with
    :meth:`DipRecipe.from_dict`). Returns both paths."""
    from safetensors.torch import save as safetensors_save

    stem = Path(path_stem)
    if stem.suffix in (WEIGHTS_SUFFIX, SIDECAR_SUFFIX):
        stem = stem.with_suffix("")
    name = stem.name
    state = net_or_state.state_dict() if isinstance(net_or_state, nn.Module) else dict(net_or_state)
    if Z_KEY in state:
        raise ValueError(f"state dict may not contain the reserved key {Z_KEY!r}")
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}
    if z is not None:
        tensors[Z_KEY] = z.detach().to("cpu", torch.float32).contiguous().clone()
    data = canonical_safetensors(safetensors_save(tensors, metadata={"format": "metadip", "name": name}))
    recipe = input_recipe.to_dict() if isinstance(input_recipe, InputRecipe) else dict(input_recipe)
    online = inner if isinstance(inner, DipRecipe) else DipRecipe.from_dict(inner)
    sidecar = {
        "format_version": FORMAT_VERSION,
        "name": name,
        "metadip_version": metadip.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "weights": name + WEIGHTS_SUFFIX,
        "sha256": hashlib.sha256(data).hexdigest(),
        "num_parameters": int(sum(v.numel() for k, v in tensors.items() if k != Z_KEY)),
        "arch": _check_json_serialisable(dict(arch_config)),
        "input": _check_json_serialisable(recipe),
        "z_mode": z_mode or ("fixed" if z is not None else "resample"),
        "fixed_z_shape": list(z.shape) if z is not None else None,
        "noise_channels": int(noise_channels),
        "inner": online.to_dict(),
        "training": _check_json_serialisable(dict(training)),
        "card": card or make_card(name, dict(arch_config), dict(training)),
    }
    if recommended_for:
        sidecar["recommended_for"] = list(check_recommendations(recommended_for, "recommended_for"))
    if avoid_for:
        sidecar["avoid_for"] = list(check_recommendations(avoid_for, "avoid_for"))
    weights_path = stem.with_name(name + WEIGHTS_SUFFIX)
    sidecar_path = stem.with_name(name + SIDECAR_SUFFIX)
    atomic_write_bytes(weights_path, data)
    atomic_write_json(sidecar_path, sidecar)
    return weights_path, sidecar_path


def export_init(
    path_stem: str | os.PathLike,
    state_dict: dict[str, Tensor],
    *,
    description: str = "",
    export: bool = False,
    **sidecar: Any,
) -> tuple[Path, Path | None]:
    """Write a trained init as ``path_stem.*`` (its run folder) and, with ``export``, also as
    ``export_dir()/NAME.*`` (``metadip pretrain --export``). ``sidecar``: :func:`save_checkpoint`'s keywords but
    ``card``, which is ``description — `` + :func:`make_card`. Returns the two sidecar paths (None for the second
    without ``export``)."""
    name = Path(path_stem).name
    text = description.strip()
    card = (f"{text} — " if text else "") + make_card(name, sidecar["arch_config"], sidecar["training"])
    _, checkpoint = save_checkpoint(path_stem, state_dict, card=card, **sidecar)
    exported = None
    if export:
        _, exported = save_checkpoint(export_dir() / name, state_dict, card=card, **sidecar)
    return checkpoint, exported


def resolve_checkpoint(name_or_path: str | os.PathLike) -> Path:
    """The sidecar path of a bare name (looked up in :func:`checkpoint_dirs`) or of a path given with or
    without its ``.json`` / ``.safetensors`` extension."""
    raw = os.fspath(name_or_path).strip()
    if not raw:
        raise MetadipError("empty checkpoint name")
    path = Path(raw)
    if path.suffix in (WEIGHTS_SUFFIX, SIDECAR_SUFFIX):
        path = path.with_suffix("")
    looks_like_path = os.sep in raw or "/" in raw or Path(raw).suffix in (WEIGHTS_SUFFIX, SIDECAR_SUFFIX)
    if looks_like_path:
        sidecar = path.with_name(path.name + SIDECAR_SUFFIX)
        if not sidecar.is_file():
            weights = path.with_name(path.name + WEIGHTS_SUFFIX)
            if weights.is_file():
                raise MetadipError(f"checkpoint sidecar {sidecar} is missing (next to {weights})")
            raise MetadipError(f"checkpoint not found: {sidecar}")
        return sidecar
    for directory in checkpoint_dirs():
        sidecar = directory / (raw + SIDECAR_SUFFIX)
        if sidecar.is_file():
            return sidecar
    local = Path(raw + SIDECAR_SUFFIX)
    if local.is_file():
        return local
    known = [n for n, _ in list_checkpoints()]
    hint = f"; shipped: {', '.join(known)}" if known else "; no checkpoints are installed"
    raise MetadipError(
        f"unknown checkpoint {raw!r} (not a file and not in {', '.join(map(str, checkpoint_dirs()))}){hint}"
    )


def _read_sidecar(path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise MetadipError(f"cannot read checkpoint sidecar {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise MetadipError(f"checkpoint sidecar {path} is not UTF-8 JSON") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise MetadipError(f"checkpoint sidecar {path} is not valid JSON (truncated?): {exc}") from None
    if not isinstance(data, dict):
        raise MetadipError(f"checkpoint sidecar {path} is not a JSON object")
    return data


def load_checkpoint(name_or_path: str | os.PathLike) -> Init:
    """Load and validate a checkpoint by bare name or path (see :func:`resolve_checkpoint`)."""
    from safetensors import SafetensorError
    from safetensors.torch import load as safetensors_load

    sidecar_path = resolve_checkpoint(name_or_path)
    meta = _read_sidecar(sidecar_path)
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise MetadipError(
            f"checkpoint {sidecar_path} has format_version {version!r}; this metadip "
            f"({metadip.__version__}) reads version {FORMAT_VERSION}"
        )
    missing = [k for k in REQUIRED_KEYS if k not in meta]
    if missing:
        raise MetadipError(f"checkpoint sidecar {sidecar_path} lacks key(s) {', '.join(missing)}")
    name = str(meta["name"])
    weights_name = str(meta.get("weights") or sidecar_path.stem + WEIGHTS_SUFFIX)
    if Path(weights_name).name != weights_name:
        raise MetadipError(
            f"checkpoint sidecar {sidecar_path} names weights outside its folder: {weights_name!r}"
        )
    weights_path = sidecar_path.with_name(weights_name)
    if not weights_path.is_file():
        raise MetadipError(f"checkpoint weights {weights_path} are missing")
    try:
        data = weights_path.read_bytes()
    except OSError as exc:
        raise MetadipError(f"cannot read checkpoint weights {weights_path}: {exc.strerror or exc}") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != meta["sha256"]:
        raise MetadipError(
            f"checkpoint weights {weights_path} are corrupt or were changed: sha256 {digest[:12]}… "
            f"does not match the sidecar's {str(meta['sha256'])[:12]}…"
        )
    try:
        tensors = safetensors_load(data)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise MetadipError(
            f"checkpoint weights {weights_path} are not a valid safetensors file: {exc}"
        ) from None
    z = tensors.pop(Z_KEY, None)
    if not isinstance(meta["arch"], dict):
        raise MetadipError(f"checkpoint sidecar {sidecar_path}: 'arch' must be an object")
    try:
        recipe = InputRecipe.from_dict(meta["input"])
    except (TypeError, ValueError) as exc:
        raise MetadipError(f"checkpoint sidecar {sidecar_path}: bad input recipe: {exc}") from None
    for key in ("inner", "training"):
        if not isinstance(meta[key], dict):
            raise MetadipError(f"checkpoint sidecar {sidecar_path}: {key!r} must be an object")
    try:
        online = DipRecipe.from_dict(meta["inner"])
    except MetadipError as exc:
        raise MetadipError(f"checkpoint sidecar {sidecar_path}: bad online recipe ('inner'): {exc}") from None
    z_mode = str(meta.get("z_mode") or ("fixed" if z is not None else "resample"))
    if z_mode not in Z_MODES:
        raise MetadipError(
            f"checkpoint sidecar {sidecar_path}: z_mode {z_mode!r} is not one of {', '.join(Z_MODES)}"
        )
    noise_channels = meta.get("noise_channels") or 0
    if isinstance(noise_channels, bool) or not isinstance(noise_channels, int) or noise_channels < 0:
        raise MetadipError(
            f"checkpoint sidecar {sidecar_path}: noise_channels must be a non-negative integer, "
            f"got {noise_channels!r}"
        )
    if z_mode == "fixed" and z is None:
        raise MetadipError(f"checkpoint {name!r} says z_mode 'fixed' but its weights file holds no {Z_KEY!r}")
    recommended = check_recommendations(
        meta.get("recommended_for", []), f"checkpoint sidecar {sidecar_path}: recommended_for"
    )
    avoided = check_recommendations(meta.get("avoid_for", []), f"checkpoint sidecar {sidecar_path}: avoid_for")
    init = Init(
        name=name,
        arch_config=dict(meta["arch"]),
        state_dict=tensors,
        input_recipe=recipe,
        recipe=online,
        training=dict(meta["training"]),
        z=z,
        sidecar=meta,
        z_mode=z_mode,
        path=sidecar_path,
        noise_channels=noise_channels,
        recommended_for=recommended,
        avoid_for=avoided,
    )
    net = build_generator(init.arch_config)  # MetadipError for an unknown/invalid architecture
    load_weights(net, tensors, name)
    if z is not None:
        expected_c = recipe.channels
        if z.dim() != 4 or z.shape[0] != 1 or z.shape[1] != expected_c:
            raise MetadipError(
                f"checkpoint {name!r}: fixed z has shape {tuple(z.shape)}, expected 1×{expected_c}×H×W"
            )
    return init


def list_checkpoints() -> list[tuple[str, str]]:
    """(name, one-line card) of every checkpoint sidecar in :func:`checkpoint_dirs` (first one wins a
    name)."""
    seen: dict[str, str] = {}
    for directory in checkpoint_dirs():
        if not directory.is_dir():
            continue
        for sidecar in sorted(directory.glob("*" + SIDECAR_SUFFIX)):
            name = sidecar.stem
            if name in seen:
                continue
            try:
                meta = json.loads(sidecar.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError):
                continue
            if not isinstance(meta, dict) or "format_version" not in meta or "arch" not in meta:
                continue  # not a checkpoint sidecar (e.g. a results file)
            card = meta.get("card") or make_card(name, meta.get("arch", {}), meta.get("training", {}))
            listed = meta.get("recommended_for")
            if isinstance(listed, list) and listed:
                card += f" · --init auto picks it for {', '.join(map(str, listed))}"
            avoided = meta.get("avoid_for")
            if isinstance(avoided, list) and avoided:
                card += f" · never for {', '.join(map(str, avoided))}"
            if not sidecar.with_name(str(meta.get("weights") or name + WEIGHTS_SUFFIX)).is_file():
                card += " (weights file missing)"
            seen[name] = str(card)
    return sorted(seen.items())


def fixed_input_inits(input_shape: Sequence[int], out_channels: int) -> list[str]:
    """Names of the checkpoints (in :func:`checkpoint_dirs`) that store a fixed z of ``input_shape`` (C×H×W) for
    pictures of ``out_channels`` channels: the siblings to name when a fixed-z init refuses a picture size."""
    found = []
    for name, _ in list_checkpoints():
        try:
            meta = _read_sidecar(resolve_checkpoint(name))
            shape = meta.get("fixed_z_shape")
            fits = int((meta.get("arch") or {}).get("out_channels", 3)) == int(out_channels)
            fits = fits and isinstance(shape, list) and [int(v) for v in shape[-3:]] == [int(v) for v in input_shape]
        except (MetadipError, OSError, AttributeError, TypeError, ValueError):
            continue  # unreadable or malformed sidecar: not a candidate
        if fits:
            found.append(name)
    return found


def _find_shipped(channels: int | None, arch: str | None, operator: Any = None) -> tuple[str, Init] | None:
    """(name, loaded init) of the initialisation ``--init auto`` picks for images with ``channels`` channels
    (None: any), generator preset ``arch`` and ``operator`` (a built operator), each when given: folders in
    :func:`checkpoint_dirs` order (``$METADIP_CHECKPOINTS`` first, so your own inits win); within a folder an
    init whose sidecar's ``recommended_for`` matches the operator (:func:`recommends`) first, then
    inits trained on its family (``training.families``) before the others, so a specialist is no fallback for a
    family it never saw; then :data:`DEFAULT_INITS` in their order (the RGB default before the grey one), then
    by name. Inits whose ``avoid_for`` matches the operator are skipped, and so are inits whose z holds BM3D's
    estimate when the optional ``bm3d`` package is missing; None when none fits (the caller falls back to random
    init). Poisson measurements need no exclusion: SURE takes its Poisson–Gaussian form (PURE) and the BM3D
    estimate goes through the Anscombe transform there.
    Checkpoints that fail to load are skipped here; naming one explicitly still reports why it failed."""
    try:
        names = [name for name, _ in list_checkpoints()]
    except (MetadipError, OSError):
        return None
    dirs = checkpoint_dirs()

    def specs_match(entries: Any) -> bool:
        return operator is not None and isinstance(entries, list) and recommends([str(v) for v in entries], operator)

    def candidate(name: str) -> tuple[int, bool, bool, int, str] | None:
        """The rank of init ``name`` from its sidecar alone, or None when it does not fit (other channel count
        or preset, ``avoid_for`` matches, unreadable sidecar): only fitting inits are loaded."""
        folder = next((i for i, d in enumerate(dirs) if (d / f"{name}{SIDECAR_SUFFIX}").is_file()), None)
        if folder is None:
            return None
        try:
            meta = _read_sidecar(dirs[folder] / f"{name}{SIDECAR_SUFFIX}")
            arch_config = meta.get("arch") or {}
            if channels is not None and int(arch_config.get("out_channels", 3)) != int(channels):
                return None
            if arch is not None and arch_config.get("name") != arch:
                return None
            if specs_match(meta.get("avoid_for", [])):
                return None
            estimate = (meta.get("input") or {}).get("estimate")
            if estimate == "bm3d" and not bm3d_available():
                return None  # its z needs the optional bm3d package
            recommended = specs_match(meta.get("recommended_for", []))
        except (MetadipError, AttributeError, TypeError, ValueError):
            return None  # a malformed sidecar fails to load as well: skipped either way
        families = (meta.get("training") or {}).get("families") if operator is not None else None
        trained = isinstance(families, list) and operator.name in families
        default = DEFAULT_INITS.index(name) if name in DEFAULT_INITS else len(DEFAULT_INITS)
        return (folder, not recommended, not trained, default, name)

    ranked = sorted((rank, name) for name in names if (rank := candidate(name)) is not None)
    for _, name in ranked:
        try:
            return name, load_checkpoint(name)
        except (MetadipError, OSError):
            continue
    return None


def find_shipped_init(channels: int | None, arch: str | None = None, operator: Any = None) -> Init | None:
    """The loaded init ``--init auto`` picks (see :func:`_find_shipped`), or None."""
    found = _find_shipped(channels, arch, operator)
    return None if found is None else found[1]


def shipped_init_for(channels: int | None, arch: str | None = None, operator: Any = None) -> str | None:
    """The name (as ``--init NAME`` takes it) of the init ``--init auto`` picks, or None."""
    found = _find_shipped(channels, arch, operator)
    return None if found is None else found[0]


def shipped_init_for_spec(spec: str, size: int = 64, channels: int | None = 3) -> str | None:
    """:func:`shipped_init_for` an operator given as a spec (built at ``size`` px with a fixed seed, so its
    default parameters are filled in), e.g. to report the ``--init auto`` rule without a measurement."""
    shape = (channels or 3, size, size)
    op = build_operator(spec, shape, generator=torch.Generator().manual_seed(0))
    return shipped_init_for(channels, operator=op)


def random_init(arch: str | dict = "skip-slim", out_channels: int = 3, seed: int = 0) -> Init:
    """Random weights (PyTorch's default init, drawn from ``seed`` without touching the global RNG) with the
    DIP paper's recipe: z ~ U(0, 1)·0.1 with the net's input channels (32 for the skip nets) and
    :data:`metadip.online.PAPER` (Adam lr 0.01, input jitter 1/30, EMA 0.99)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        net = build_generator(arch, out_channels=out_channels)
    recipe = default_input_recipe(net, seed=int(seed))
    state = {k: v.detach().clone() for k, v in net.state_dict().items()}
    training = {"algorithm": "none", "seed": int(seed)}
    return Init(
        name="random",
        arch_config=net.config,
        state_dict=state,
        input_recipe=recipe,
        recipe=PAPER,
        training=training,
        z=None,
        sidecar={},
        z_mode="resample",
    )
