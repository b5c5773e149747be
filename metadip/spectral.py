"""The spectral view of a DIP run: *what* an initialisation changes, frequency by frequency.

DIP fits low spatial frequencies before high ones (its "spectral bias"); a meta-learned init may start with
the low frequencies already right, or fit the high ones sooner. Two measures show it:

* :func:`radial_power_spectrum` — the power |FFT|² averaged over rings of equal radial frequency (cycles
  per pixel, 0 … 0.5; DC left out), mean over channels. With the orthonormal FFT, white noise of variance σ²
  has a flat spectrum at σ²; natural images fall off roughly as 1/f².
* :func:`band_relative_error` — for ``n_bands`` equal-width radial bands, ‖F(x̂) − F(x)‖ / ‖F(x)‖ over the
  frequencies in each band: 0 for a perfect reconstruction, 1 for an estimate that has nothing of the band (or
  is as wrong as the band is strong).

:class:`SpectralRecorder` is a ``callback(iteration, estimate, row, raw)`` for :func:`metadip.api.reconstruct`
that records both at logarithmically spaced iterations (a few FFTs of a small image: negligible next to a DIP
step).
"""

from __future__ import annotations

import math

import numpy as np
import torch

#: Default number of radial bands for the band-error heat maps.
DEFAULT_BANDS = 8


def _as_array(image) -> np.ndarray:
    """C×H×W float64 array from a 1×C×H×W / C×H×W tensor or an H×W / C×H×W array."""
    if isinstance(image, torch.Tensor):
        array = image.detach().to("cpu", torch.float64)
        if array.dim() == 4:
            array = array[0]
        array = array.numpy()
    else:
        array = np.asarray(image, dtype=np.float64)
        if array.ndim == 4:
            array = array[0]
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3:
        raise ValueError(f"expected an image shaped (1,)C×H×W or H×W, got {array.shape}")
    return array


def radial_frequency(height: int, width: int) -> np.ndarray:
    """H×W radial frequency |f| in cycles per pixel of every FFT coefficient (FFT order, DC at [0, 0])."""
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.fftfreq(width)[None, :]
    return np.sqrt(fy**2 + fx**2)


def _bin_index(radius: np.ndarray, n_bins: int) -> np.ndarray:
    """Bin of each radial frequency: equal-width bins over [0, 0.5]; the corners (|f| > 0.5) join the last."""
    index = np.floor(radius / 0.5 * n_bins).astype(int)
    return np.clip(index, 0, n_bins - 1)


def radial_power_spectrum(image, n_bins: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Radially averaged power spectrum of ``image``: (ring radii in cycles/pixel, mean power per ring).

    ``n_bins`` equal-width rings over (0, 0.5] cycles/pixel, default min(H, W) // 2 (one ring per integer
    radius: ring k holds the coefficients with (k − 1)/N < |f| ≤ k/N). The DC term (the image mean) is left
    out; the corners (|f| > 0.5) join the last ring. Power uses the orthonormal FFT, averaged over channels
    and over the coefficients of each ring (an empty ring is NaN).
    """
    array = _as_array(image)
    channels, height, width = array.shape
    n_bins = int(n_bins or max(1, min(height, width) // 2))
    power = (np.abs(np.fft.fft2(array, norm="ortho")) ** 2).mean(axis=0).ravel()
    radius = radial_frequency(height, width).ravel()
    keep = radius > 0
    index = np.clip(np.ceil(radius[keep] / 0.5 * n_bins - 1e-9).astype(int) - 1, 0, n_bins - 1)
    sums = np.bincount(index, weights=power[keep], minlength=n_bins)
    counts = np.bincount(index, minlength=n_bins)
    spectrum = np.divide(sums, counts, out=np.full(n_bins, np.nan), where=counts > 0)
    centres = (np.arange(n_bins) + 1) * 0.5 / n_bins
    return centres, spectrum


def band_edges(n_bands: int = DEFAULT_BANDS) -> np.ndarray:
    """The ``n_bands + 1`` edges (cycles/pixel) of the radial bands; the last band also takes |f| > 0.5."""
    return np.linspace(0.0, 0.5, n_bands + 1)


def band_relative_error(estimate, reference, n_bands: int = DEFAULT_BANDS) -> np.ndarray:
    """Relative error ‖F(estimate) − F(reference)‖ / ‖F(reference)‖ in each of ``n_bands`` radial bands.

    Zero for identical images. A band where the reference has no energy reports the absolute error norm
    (0 if the estimate has none either) rather than dividing by zero.
    """
    est, ref = _as_array(estimate), _as_array(reference)
    if est.shape != ref.shape:
        raise ValueError(f"estimate {est.shape} and reference {ref.shape} differ in shape")
    _, height, width = ref.shape
    index = _bin_index(radial_frequency(height, width), n_bands).ravel()
    f_ref = np.fft.fft2(ref, norm="ortho")
    f_err = np.fft.fft2(est, norm="ortho") - f_ref
    err = np.bincount(index, weights=(np.abs(f_err) ** 2).sum(axis=0).ravel(), minlength=n_bands)
    energy = np.bincount(index, weights=(np.abs(f_ref) ** 2).sum(axis=0).ravel(), minlength=n_bands)
    return np.sqrt(np.divide(err, energy, out=err.copy(), where=energy > 0))


def log_spaced_iterations(budget: int, per_decade: int = 8) -> list[int]:
    """Sorted distinct iterations 1 … ``budget`` spaced evenly on a log scale (``per_decade`` per ×10), always
    including 1 and ``budget``."""
    if budget < 1:
        return []
    count = max(2, int(math.ceil(math.log10(max(budget, 1)) * per_decade)) + 1)
    points = np.unique(np.round(np.logspace(0, math.log10(budget), count)).astype(int))
    return sorted({1, int(budget), *(int(p) for p in points if 1 <= p <= budget)})


class SpectralRecorder:
    """``callback(iteration, estimate, row, raw)`` recording the band errors and the power spectrum of the
    estimate at ``iterations`` (default: log-spaced up to ``budget``)."""

    def __init__(
        self,
        reference: torch.Tensor,
        budget: int,
        *,
        n_bands: int = DEFAULT_BANDS,
        iterations: list[int] | None = None,
        n_bins: int | None = None,
    ) -> None:
        self.reference = reference.detach().to("cpu", torch.float32)
        self.n_bands = int(n_bands)
        self.n_bins = n_bins
        self.wanted = set(iterations if iterations is not None else log_spaced_iterations(budget))
        self.iterations: list[int] = []
        self.band_error: list[list[float]] = []
        self.power: list[list[float]] = []
        self.frequencies: list[float] = []

    def __call__(self, iteration: int, estimate: torch.Tensor, row=None, raw=None) -> None:
        if iteration not in self.wanted:
            return
        image = estimate.detach().to("cpu", torch.float32).clamp(0, 1)
        self.iterations.append(int(iteration))
        self.band_error.append([float(v) for v in band_relative_error(image, self.reference, self.n_bands)])
        freqs, power = radial_power_spectrum(image, self.n_bins)
        self.frequencies = [float(f) for f in freqs]
        self.power.append([float(p) for p in power])

    def to_dict(self, digits: int = 5) -> dict:
        """JSON-ready record: ``iterations``, ``band_edges``, ``band_error`` [iteration][band],
        ``frequencies``, ``power`` [iteration][bin] (rounded to ``digits`` significant digits)."""
        return {
            "iterations": list(self.iterations),
            "band_edges": [round(float(e), 6) for e in band_edges(self.n_bands)],
            "band_error": [[_sig(v, digits) for v in row] for row in self.band_error],
            "frequencies": [round(f, 6) for f in self.frequencies],
            "power": [[_sig(v, digits) for v in row] for row in self.power],
        }


def _sig(value: float, digits: int) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return float(f"{value:.{digits}g}")


def spectrum_record(image, n_bins: int | None = None, digits: int = 5) -> dict:
    """``{"frequencies": [...], "power": [...]}`` of one image, JSON-ready."""
    freqs, power = radial_power_spectrum(image, n_bins)
    return {
        "frequencies": [round(float(f), 6) for f in freqs],
        "power": [_sig(float(p), digits) for p in power],
    }
