"""Meta-training of DIP initialisations: a typed recipe (frozen dataclasses ⇄ TOML) and the run that trains it.

``run_pretrain(config, out_dir)`` (:mod:`~metadip.pretrain.recipe`) is a recipe in named steps — set up the
device and ranks, the config (fresh or resumed), the images and task sampler, the network and its z policy, the
meta-learner, the starting point, logging and validation — then one flat loop: per meta-step draw the global task
indices, take this rank's share, compute the meta-gradient (MAML) or the Reptile delta, all-reduce, update, log,
validate, checkpoint; finally export a ``safetensors`` + JSON checkpoint.

Everything random derives from ``(seed, purpose, index)`` (:func:`metadip.tasks.derive_seed`): θ0's initial
weights, task k, each task's inner-loop jitter and z draw, the validation tasks. Nothing draws from a global
stream, so a run resumed from ``state.pt`` reproduces an uninterrupted run bit for bit, and 2 processes
reproduce 1 (up to float summation order).

Output folder: ``config.toml`` (resolved config), ``state.pt`` (training state: weights, outer-optimiser
state, learned inner lrs, fixed z, step, wall time, resolved config, RNG state; loaded with
``weights_only=True``), ``log.jsonl``, ``tb/`` (TensorBoard), ``NAME.safetensors`` + ``NAME.json`` (the
exported init).

Modules (each imports only those above it):

* :mod:`~metadip.pretrain.config`: the dataclasses, their TOML round trip, :func:`validate_config`, what a
  resumed run may change.
* :mod:`~metadip.pretrain.folder`: :func:`images_recipe`, the recipe of ``metadip pretrain --images DIR``.
* :mod:`~metadip.pretrain.state`: ``state.pt`` and ``model.init_from`` (with the grey / complex channel conversion).
* :mod:`~metadip.pretrain.validation`: θ0 against random init on held-out tasks during training.
* :mod:`~metadip.pretrain.export`: the exported sidecar's online recipe and training record.
* :mod:`~metadip.pretrain.recipe`: the setup steps, the loop, :func:`run_pretrain`.
"""

from metadip.pretrain.config import (
    ALGORITHMS,
    DataConfig,
    InputConfig,
    LogSettings,
    MAMLSettings,
    ModelConfig,
    OnlineSettings,
    PretrainConfig,
    ReptileSettings,
    resume_config,
    validate_config,
)
from metadip.pretrain.folder import SCRATCH, SCRATCH_ARCHS, images_recipe, init_recipe
from metadip.pretrain.recipe import METRIC_KEYS, PretrainResult, lr_scale, run_pretrain
from metadip.pretrain.state import _CONVERSIONS as _CONVERSIONS
from metadip.pretrain.state import STATE_VERSION
from metadip.pretrain.state import _channel_change as _channel_change
from metadip.pretrain.state import _load_init_from as _load_init_from
from metadip.pretrain.state import _load_state as _load_state
from metadip.pretrain.state import _save_state as _save_state

__all__ = [
    "ALGORITHMS",
    "METRIC_KEYS",
    "SCRATCH",
    "SCRATCH_ARCHS",
    "STATE_VERSION",
    "DataConfig",
    "InputConfig",
    "LogSettings",
    "MAMLSettings",
    "ModelConfig",
    "OnlineSettings",
    "PretrainConfig",
    "PretrainResult",
    "ReptileSettings",
    "images_recipe",
    "init_recipe",
    "lr_scale",
    "resume_config",
    "run_pretrain",
    "validate_config",
]
