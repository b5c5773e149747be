"""Operator files: the mask / kernel files users give (``--mask``, ``--kernel``) and the artifacts written
beside a measurement ``Y`` (``Y.operator.json`` + ``Y.mask.png`` / ``Y.kernel.npy`` / ``Y.kspace_mask.npy``), from
which :func:`load_operator_for_measurement` rebuilds its operator."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from metadip.errors import MetadipError
from metadip.fileio import atomic_save_with, atomic_write_json
from metadip.operators.base import LinearOperator, _binary_mask, _format, _kernel_array
from metadip.operators.families import OPERATORS, SuperRes
from metadip.operators.spec import OperatorSpec, _family, _image_shape, _validate, build_operator, parse_operator_spec

ARTIFACT_FORMAT_VERSION = 1
NOISE_KEYS = ("sigma", "poisson")


def _read_array(path: str | Path, what: str) -> np.ndarray:
    """Read a .npy or .png file as a 2-D numeric array (PNG colour channels: max over RGB, alpha dropped)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".npy", ".png"):
        raise MetadipError(f"{what} file {path} must be .png or .npy")
    if not path.is_file():
        raise MetadipError(f"{what} file {path} not found")
    try:
        if suffix == ".npy":
            array = np.load(path, allow_pickle=False)
        else:
            import imageio.v3 as iio

            array = iio.imread(path, plugin="pillow")
    except Exception as exc:  # any reader failure is a bad user file
        raise MetadipError(f"cannot read {what} file {path}: {exc}") from None
    if not isinstance(array, np.ndarray):  # an .npz archive under a .npy name
        raise MetadipError(f"{what} file {path} holds several arrays; save one array with np.save")
    if array.dtype.kind not in "biuf":
        raise MetadipError(f"{what} file {path} has unsupported dtype {array.dtype}")
    if suffix == ".png" and array.ndim == 3:
        array = array[..., : 3 if array.shape[-1] >= 3 else 1].max(axis=-1)
    if array.ndim != 2:
        raise MetadipError(f"{what} file {path} must hold a 2-D array, got shape {array.shape}")
    return array


def load_mask(path: str | Path, hw: tuple[int, int]) -> torch.Tensor:
    """Load a mask file (.png or .npy, nonzero = observed) that must be H×W; returns a 1×1×H×W 0/1 mask."""
    return _binary_mask(_read_array(path, "mask"), tuple(hw), f"mask file {path}")


def load_kernel(path: str | Path) -> torch.Tensor:
    """Load a blur kernel file (.npy or .png; 2-D, finite, non-negative), normalised to sum 1."""
    return _kernel_array(_read_array(path, "kernel").astype(np.float64), f"kernel file {path}")


def operator_files(measurement_path: str | Path) -> list[Path]:
    """Every file :func:`save_operator_artifacts` may write beside the measurement (whether it exists or not)."""
    suffixes = [".operator.json", *(cls.ARTIFACT for cls in OPERATORS.values() if cls.ARTIFACT)]
    return [_sidecar(measurement_path, suffix) for suffix in dict.fromkeys(suffixes)]


def _sidecar(measurement_path: str | Path, suffix: str) -> Path:
    path = Path(measurement_path)
    return path.with_name(path.stem + suffix)


def save_operator_artifacts(op: LinearOperator, measurement_path: str | Path) -> list[Path]:
    """Write ``Y.operator.json`` beside the measurement ``Y`` (+ ``Y.mask.png``, ``Y.kernel.npy`` or
    ``Y.kspace_mask.npy``); returns the written paths, the JSON last."""
    written, files = [], {}
    array = op._array()
    if array is not None:
        path = _sidecar(measurement_path, op.ARTIFACT)
        if path.suffix == ".png":
            import imageio.v3 as iio

            image = (np.asarray(array) != 0).astype(np.uint8) * 255
            atomic_save_with(path, lambda tmp: iio.imwrite(tmp, image))
        else:
            atomic_save_with(path, lambda tmp: np.save(tmp, array))
        files[op.ARRAY] = path.name
        written.append(path)
    record = {
        "format_version": ARTIFACT_FORMAT_VERSION,
        "measurement": Path(measurement_path).name,  # y.png and y.npy share the stem, not the record
        "spec": op.spec(),
        "params": op.params(),
        "image_shape": list(op.image_shape),
        "measurement_shape": list(op.measurement_shape),
        "files": files,
    }
    sidecar = _sidecar(measurement_path, ".operator.json")
    atomic_write_json(sidecar, record)
    return [*written, sidecar]


def _other_owner(record, sidecar: Path, name: str) -> str | None:
    """The other measurement an operator record was written for, when that file is still beside it (else None:
    the record is ``name``'s, an older record without the field, or the measurement was renamed)."""
    owner = record.get("measurement") if isinstance(record, dict) else None
    if isinstance(owner, str) and owner != name and (sidecar.parent / owner).is_file():
        return owner
    return None


def record_owner(sidecar: Path, name: str) -> str | None:
    """:func:`_other_owner` of the record file ``sidecar`` (None when it is missing or unreadable)."""
    try:
        return _other_owner(json.loads(sidecar.read_text(encoding="utf-8")), sidecar, name)
    except (OSError, ValueError):
        return None


def _read_record(sidecar: Path, measurement_path: str | Path) -> tuple[OperatorSpec, tuple[int, int, int], dict]:
    """The record's spec, image shape and files; refused when it was written for another measurement that
    is still beside it (``y.png`` and ``y.tif`` share ``y.operator.json``). A renamed measurement is fine."""
    name = Path(measurement_path).name
    try:
        record = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise MetadipError(f"{sidecar} is not a readable metadip operator record ({exc})") from None
    owner = _other_owner(record, sidecar, name)
    if owner is not None:
        raise MetadipError(
            f"{sidecar.name} describes {owner}, not {name} (the two share a file stem); "
            "move one of them to another name or folder"
        )
    try:
        return parse_operator_spec(record["spec"]), _image_shape(record["image_shape"]), dict(record["files"])
    except MetadipError as exc:
        raise MetadipError(f"{sidecar}: {exc}") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise MetadipError(f"{sidecar} is not a readable metadip operator record ({exc})") from None


def load_operator_for_measurement(
    measurement_path: str | Path,
    spec: str | OperatorSpec | None = None,
    mask_path: str | Path | None = None,
    kernel_path: str | Path | None = None,
    measurement_shape: tuple[int, ...] | None = None,
) -> LinearOperator:
    """Rebuild the operator that produced the measurement at ``measurement_path``.

    With ``Y.operator.json`` beside it, the recorded operator (same mask/kernel) is rebuilt; a user ``spec``
    must name the same family and may only change ``sigma``/``poisson``; explicit mask/kernel files replace
    the recorded ones. Without it, ``spec`` and ``measurement_shape`` (C, H, W or B, C, H, W) are required,
    the image shape is the measurement shape (× factor for superres), and families with drawn parameters
    need their file (``--mask`` for inpaint/fourier, ``--kernel`` or ``angle=`` for motion blur).
    """
    sidecar = _sidecar(measurement_path, ".operator.json")
    paths = {"mask": mask_path, "kernel": kernel_path}
    user = parse_operator_spec(spec) if isinstance(spec, str) else spec
    if user is not None:
        user = OperatorSpec(user.name, _validate(user.name, user.params))
    if sidecar.is_file():
        saved, image_shape, files = _read_record(sidecar, measurement_path)
        params = dict(saved.params)
        if user is not None:
            if user.name != saved.name:
                raise MetadipError(
                    f"operator {user.name} does not match {saved.name} recorded in {sidecar.name}"
                )
            for key, value in user.params.items():
                if key not in NOISE_KEYS and params.get(key) != value:
                    raise MetadipError(
                        f"{key}={_format(value)} conflicts with {key}={_format(params.get(key))} recorded in "
                        f"{sidecar.name}; only {', '.join(NOISE_KEYS)} may be overridden"
                    )
            params.update(user.params)
        chosen = OperatorSpec(saved.name, params)
        for what, name in files.items():
            paths[what] = paths.get(what) or sidecar.parent / name
    else:
        if user is None:
            raise MetadipError(
                f"no {sidecar.name} beside {measurement_path}; give the operator spec (--operator)"
            )
        if measurement_shape is None:
            raise MetadipError(f"the shape of {measurement_path} is needed to rebuild its operator")
        channels, height, width = _image_shape(measurement_shape)
        if user.name == "superres":
            factor = user.params.get("factor", SuperRes.KEYS["factor"].default)
            height, width = height * factor, width * factor
        image_shape, chosen = (channels, height, width), user
        cls = _family(user.name)
        motion = (
            user.name == "deblur" and user.params.get("kernel") == "motion" and "angle" not in user.params
        )
        if (cls.ARRAY == "mask" and paths["mask"] is None) or (motion and paths["kernel"] is None):
            fix = "--mask" if cls.ARRAY == "mask" else "--kernel or angle="
            raise MetadipError(
                f"{user.name} needs {fix} to rebuild the operator of {measurement_path} "
                f"(no {sidecar.name} found)"
            )
    mask = load_mask(paths["mask"], image_shape[1:]) if paths["mask"] is not None else None
    kernel = load_kernel(paths["kernel"]) if paths["kernel"] is not None else None
    op = build_operator(chosen, image_shape, mask=mask, kernel=kernel)
    expected = tuple(op.measurement_shape[1:])
    if measurement_shape is not None and tuple(measurement_shape)[-2:] != expected:
        got = tuple(measurement_shape)[-2:]
        raise MetadipError(
            f"{measurement_path} is {got[0]}×{got[1]} but its operator expects {expected[0]}×{expected[1]}"
        )
    return op
