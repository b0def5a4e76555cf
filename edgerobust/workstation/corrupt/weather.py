"""The weather corruptions of ImageNet-C (Hendrycks & Dietterich 2019) that need no image assets: fog, snow.

Frost blends photographs of frost (ImageNet-C ships six) and spatter needs OpenCV's edge and
distance transforms; both are left out (:data:`.registry.LEFT_OUT` says so in every manifest). Fog is
ImageNet-C's diamond-square plasma fractal, drawn on the next power of two above the image side
(ImageNet-C: 256 for 224 px) and cut to the image; snow's motion blur is :func:`.blur.motion` with
ImageNet-C's pixel parameters scaled as the blurs are. Conventions: see :mod:`.noise`.
"""
from __future__ import annotations

import numpy as np

from .blur import clipped_zoom, motion, scale
from .noise import clip

FOG = ((1.5, 2), (2.0, 2), (2.5, 1.7), (2.5, 1.5), (3.0, 1.4))  # fog strength, wibble decay of the fractal
# snow: mean, std of the flake layer, zoom, threshold, motion radius, motion sigma (px at 224), image weight
SNOW = ((0.1, 0.3, 3, 0.5, 10, 4, 0.8), (0.2, 0.3, 2, 0.5, 12, 4, 0.7), (0.55, 0.3, 4, 0.9, 12, 8, 0.7),
        (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65), (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55))
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R 601, as OpenCV's RGB2GRAY


def plasma_fractal(n: int, mapsize: int, decay: float, rng: np.random.Generator) -> np.ndarray:
    """``n`` diamond-square height maps (mapsize x mapsize, a power of two) in [0, 1]."""
    m = np.zeros((n, mapsize, mapsize))
    step, wibble = mapsize, 100.0

    def wibbled(a: np.ndarray) -> np.ndarray:
        return a / 4 + wibble * rng.uniform(-wibble, wibble, a.shape)

    while step >= 2:
        half = step // 2
        corner = m[:, 0:mapsize:step, 0:mapsize:step]
        square = corner + np.roll(corner, -1, axis=1)
        square = square + np.roll(square, -1, axis=2)
        m[:, half:mapsize:step, half:mapsize:step] = wibbled(square)
        dr = m[:, half:mapsize:step, half:mapsize:step]
        ul = m[:, 0:mapsize:step, 0:mapsize:step]
        m[:, 0:mapsize:step, half:mapsize:step] = wibbled(dr + np.roll(dr, 1, axis=1) + ul + np.roll(ul, -1, axis=2))
        m[:, half:mapsize:step, 0:mapsize:step] = wibbled(dr + np.roll(dr, 1, axis=2) + ul + np.roll(ul, -1, axis=1))
        step //= 2
        wibble /= decay
    m -= m.min(axis=(1, 2), keepdims=True)
    return m / np.maximum(m.max(axis=(1, 2), keepdims=True), 1e-12)


def fog(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    c, decay = FOG[severity - 1]
    h, w = x.shape[-2:]
    mapsize = 1 << int(np.ceil(np.log2(max(h, w, 2))))  # ImageNet-C: 256 for 224 px
    haze = plasma_fractal(len(x), mapsize, decay, rng)[:, None, :h, :w]
    top = x.max(axis=(1, 2, 3), keepdims=True)
    return clip((x + c * haze) * top / (top + c))


def gray(x: np.ndarray) -> np.ndarray:
    """Luminance (N, 1, H, W): the image itself with one channel, ITU-R 601 weights with three."""
    if x.shape[1] == 3:
        return np.tensordot(LUMA, x, axes=([0], [1]))[:, None]
    return x.mean(axis=1, keepdims=True)


def snow(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    loc, sd, zoom, thresh, radius, sigma, keep = SNOW[severity - 1]
    h, w = x.shape[-2:]
    flakes = rng.normal(loc=loc, scale=sd, size=(len(x), 1, h, w))
    flakes = clipped_zoom(flakes, zoom)
    flakes[flakes < thresh] = 0
    k = scale(x)
    flakes = motion(np.clip(flakes, 0, 1), radius * k, sigma * k, rng.uniform(-135, -45, size=len(x)))
    x = keep * x + (1 - keep) * np.maximum(x, gray(x) * 1.5 + 0.5)
    return clip(x + flakes + np.rot90(flakes, k=2, axes=(2, 3)))
