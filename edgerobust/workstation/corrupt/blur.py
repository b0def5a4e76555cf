"""The blur corruptions of ImageNet-C (Hendrycks & Dietterich 2019): defocus, gaussian, motion, glass, zoom.

Spatial parameters (radii, sigmas, shifts) are ImageNet-C's, given for 224 px images, scaled by the
image's shorter side / 224 (:func:`scale`): a blur covers the same share of the picture at 16, 32 or
224 px. At 32 px this lands close to the parameters Hendrycks et al. chose by hand for CIFAR-10-C
(defocus radius 0.43-1.43 px here, 0.3-1.5 there), milder at severities 1-2 of the gaussian blur.
Zoom factors are relative and need no scaling. Conventions: see :mod:`.noise`.
"""
from __future__ import annotations

import numpy as np

from .deps import scipy_ndimage
from .noise import clip

DEFOCUS = ((3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5))  # disk radius, alias blur sigma (px at 224)
GAUSSIAN = (1, 2, 3, 4, 6)  # sigma (px at 224)
MOTION = ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15))  # radius, sigma (px at 224); angle uniform in ±45°
GLASS = ((0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2))  # sigma, max shift (px at 224), iterations
ZOOM = tuple(tuple(np.round(np.arange(1, stop, step), 4)) for stop, step in
             ((1.11, 0.01), (1.16, 0.01), (1.21, 0.02), (1.26, 0.02), (1.31, 0.03)))  # zoom factors averaged


def scale(x: np.ndarray) -> float:
    """The factor ImageNet-C's pixel parameters (for 224 px) take at ``x``'s size."""
    return min(x.shape[-2:]) / 224.0


def _gauss(x: np.ndarray, sigma: float) -> np.ndarray:
    ndimage = scipy_ndimage()

    if sigma <= 0:
        return x
    return ndimage.gaussian_filter(x, sigma=(0, 0, sigma, sigma), mode="nearest", truncate=4.0)


def gaussian_blur(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    return clip(_gauss(x, GAUSSIAN[severity - 1] * scale(x)))


def disk(radius: float, alias: float) -> np.ndarray:
    """A normalized disk kernel, area-weighted (8x8 supersampling per pixel) so that a radius below one
    pixel still blurs in proportion, then smoothed by ``alias`` as ImageNet-C does."""
    ndimage = scipy_ndimage()

    n = int(np.ceil(radius)) + 1
    sub = (np.arange(8) + 0.5) / 8 - 0.5
    grid = np.arange(-n, n + 1)
    yy = grid[:, None, None, None] + sub[None, None, :, None]
    xx = grid[None, :, None, None] + sub[None, None, None, :]
    k = ((yy ** 2 + xx ** 2) <= radius ** 2).mean(axis=(2, 3))
    if k.sum() == 0:
        k[n, n] = 1.0
    if alias > 0:
        k = ndimage.gaussian_filter(k / k.sum(), alias, mode="constant")
    return (k / k.sum()).astype(np.float32)


def defocus_blur(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    ndimage = scipy_ndimage()

    r, alias = DEFOCUS[severity - 1]
    k = scale(x)
    return clip(ndimage.convolve(x, disk(r * k, alias * k)[None, None], mode="mirror"))


def motion_kernel_offsets(length: int, sigma: float, angle_deg: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ImageMagick's (Wand's) one-sided motion blur as (dy, dx, weight) taps: ``length`` taps along the
    angle, gaussian weights of ``sigma`` falling off from the pixel itself."""
    i = np.arange(length, dtype=np.float64)
    w = np.exp(-(i ** 2) / (2 * max(sigma, 1e-3) ** 2))
    a = np.deg2rad(angle_deg)
    return np.round(i * np.sin(a)).astype(int), np.round(i * np.cos(a)).astype(int), w / w.sum()


def motion(x: np.ndarray, radius: float, sigma: float, angles: np.ndarray) -> np.ndarray:
    """Each image of ``x`` blurred along its own angle (edges repeated)."""
    length = max(1, int(round(2 * radius + 1)))
    out = np.empty_like(x)
    pad = length
    padded = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)), mode="edge")
    h, w = x.shape[-2:]
    for n, ang in enumerate(angles):
        dy, dx, wt = motion_kernel_offsets(length, sigma, float(ang))
        acc = np.zeros(x.shape[1:], dtype=np.float64)
        for a, b, c in zip(dy, dx, wt):
            acc += c * padded[n, :, pad + a:pad + a + h, pad + b:pad + b + w]
        out[n] = acc
    return out


def motion_blur(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    r, s = MOTION[severity - 1]
    k = scale(x)
    return clip(motion(x, r * k, s * k, rng.uniform(-45, 45, size=len(x))))


def glass_blur(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Blur, then swap each pixel with a random neighbour up to ``delta`` away (ImageNet-C's raster
    order, every image of the batch at once), then blur again."""
    sigma, delta, iterations = GLASS[severity - 1]
    k = scale(x)
    delta = max(1, int(round(delta * k)))
    y = np.floor(_gauss(x, sigma * k).clip(0, 1) * 255) / 255  # ImageNet-C shuffles the uint8 image
    h, w = x.shape[-2:]
    rows = np.arange(len(x))
    for _ in range(iterations):
        for i in range(h - delta, delta, -1):
            for j in range(w - delta, delta, -1):
                dy, dx = rng.integers(-delta, delta, size=(2, len(x)))
                a, b = y[rows, :, i, j].copy(), y[rows, :, i + dy, j + dx].copy()
                y[rows, :, i, j], y[rows, :, i + dy, j + dx] = b, a
    return clip(_gauss(y, sigma * k))


def clipped_zoom(x: np.ndarray, factor: float) -> np.ndarray:
    """The centre of each image zoomed in by ``factor`` (linear interpolation), cut back to its size."""
    ndimage = scipy_ndimage()

    h, w = x.shape[-2:]
    ch, cw = int(np.ceil(h / factor)), int(np.ceil(w / factor))
    top, left = (h - ch) // 2, (w - cw) // 2
    z = ndimage.zoom(x[..., top:top + ch, left:left + cw], (1, 1, factor, factor), order=1, mode="nearest")
    if z.shape[-2] < h or z.shape[-1] < w:
        z = np.pad(z, ((0, 0), (0, 0), (0, max(0, h - z.shape[-2])), (0, max(0, w - z.shape[-1]))), mode="edge")
    t, left = (z.shape[-2] - h) // 2, (z.shape[-1] - w) // 2
    return z[..., t:t + h, left:left + w]


def zoom_blur(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    factors = ZOOM[severity - 1]
    out = x.astype(np.float64).copy()
    for f in factors:
        out += clipped_zoom(x, float(f))
    return clip(out / (len(factors) + 1))
