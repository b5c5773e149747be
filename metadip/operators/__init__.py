"""Forward operators ``A`` for metadip's inverse problems, their spec strings and measurement artifacts.

Every operator maps a real image batch ``x`` (B×C×H×W, [0, 1]) to a measurement ``y = A x`` and has an exact
adjoint ``A_adjoint`` (``<A x, y> = <x, A_adjoint y>`` for the real inner product). Both are batched,
differentiable and work in any floating dtype; random parameters (masks, motion angles) are drawn once, at
construction, from the ``torch.Generator`` given to :func:`build_operator`.

Design choices
--------------
* ``deblur`` is a circular convolution computed with the FFT (exact adjoint: multiplication by the conjugate
  transfer function). The kernel is periodised onto the H×W torus, so a generated kernel larger than the image
  still gives a valid operator; a kernel file must not be larger than the image.
* ``superres`` filters with a box (average over each factor×factor block) or Gaussian anti-alias kernel and
  decimates, as one strided ``conv2d`` (the Gaussian one with circular boundary); the adjoint is the matching
  ``conv_transpose2d``. When H or W is not a multiple of the factor, the operator sees only the top-left
  ``(H // factor) * factor`` × ``(W // factor) * factor`` region: trailing rows/columns are unobserved and the
  adjoint is zero there. An image smaller than the factor is an error.
* ``fourier`` measures ``mask · FFT(x)`` with the orthonormal 2-D FFT per channel (complex measurements). The
  k-space mask is stored in FFT order (DC at index [0, 0]); its noise convention is described in
  :mod:`metadip.noise`. ``A_adjoint`` returns the real part of ``IFFT(mask · y)``.
* ``inpaint`` and ``fourier`` report their masks through ``measurement_mask()``; :func:`simulate` puts noise
  only on measured entries, so unmeasured entries of ``y`` are exactly zero.

Layout (maths never imports file IO)
------------------------------------
* :mod:`~metadip.operators.base`: the :class:`LinearOperator` contract, spec keys, mask/kernel checks, :func:`simulate`.
* :mod:`~metadip.operators.families`: Denoise, Inpaint, SuperRes, Deblur, Fourier and :data:`OPERATORS`.
* :mod:`~metadip.operators.spec`: :func:`parse_operator_spec`, :func:`build_operator`, :func:`describe_operators`.
* :mod:`~metadip.operators.files`: ``--mask`` / ``--kernel`` files and the ``Y.operator.json`` artifacts.

Import from ``metadip.operators``; the names below are its API.
"""

from metadip.operators.base import MAX_SIGMA, LinearOperator, simulate
from metadip.operators.families import (
    GENERATED_KERNEL_WRAP,
    OPERATORS,
    Deblur,
    Denoise,
    Fourier,
    Inpaint,
    SuperRes,
    gaussian_kernel,
    motion_kernel,
)
from metadip.operators.files import (
    ARTIFACT_FORMAT_VERSION,
    NOISE_KEYS,
    load_kernel,
    load_mask,
    load_operator_for_measurement,
    operator_files,
    record_owner,
    save_operator_artifacts,
)
from metadip.operators.spec import OperatorSpec, build_operator, describe_operators, parse_operator_spec

__all__ = [
    "ARTIFACT_FORMAT_VERSION",
    "GENERATED_KERNEL_WRAP",
    "MAX_SIGMA",
    "NOISE_KEYS",
    "OPERATORS",
    "Deblur",
    "Denoise",
    "Fourier",
    "Inpaint",
    "LinearOperator",
    "OperatorSpec",
    "SuperRes",
    "build_operator",
    "describe_operators",
    "gaussian_kernel",
    "load_kernel",
    "load_mask",
    "load_operator_for_measurement",
    "motion_kernel",
    "operator_files",
    "parse_operator_spec",
    "record_owner",
    "save_operator_artifacts",
    "simulate",
]
