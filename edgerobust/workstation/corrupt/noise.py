"""The noise corruptions of ImageNet-C (Hendrycks & Dietterich 2019): gaussian, shot, impulse, speckle.

Every corruption here and in its sibling modules takes a batch ``x`` (N, C, H, W) float32 in [0, 1],
a severity 1..5 and a numpy Generator, and returns the corrupted batch clipped to [0, 1]. The
parameters per severity are ImageNet-C's (make_imagenet_c.py); noise acts per pixel, so they hold at
any image size.
"""
from __future__ import annotations

import numpy as np

GAUSSIAN = (0.08, 0.12, 0.18, 0.26, 0.38)  # standard deviation of additive noise
SHOT = (60, 25, 12, 5, 3)  # photons per unit of intensity (Poisson)
IMPULSE = (0.03, 0.06, 0.09, 0.17, 0.27)  # share of values set to 0 or 1 (salt and pepper)
SPECKLE = (0.15, 0.2, 0.35, 0.45, 0.6)  # standard deviation of multiplicative noise


def clip(x: np.ndarray) -> np.ndarray:
    """``x`` as float32 clipped to [0, 1]."""
    return np.clip(x, 0.0, 1.0).astype(np.float32, copy=False)


def gaussian_noise(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    return clip(x + rng.normal(scale=GAUSSIAN[severity - 1], size=x.shape))


def shot_noise(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    c = SHOT[severity - 1]
    return clip(rng.poisson(np.clip(x, 0, 1) * c) / c)


def impulse_noise(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Salt and pepper on a share of the values, half each (scikit-image's ``random_noise('s&p')``)."""
    hit = rng.random(x.shape) < IMPULSE[severity - 1]
    salt = rng.random(x.shape) < 0.5
    return clip(np.where(hit, salt.astype(np.float32), x))


def speckle_noise(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    return clip(x + x * rng.normal(scale=SPECKLE[severity - 1], size=x.shape))
