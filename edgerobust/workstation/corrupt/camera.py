"""Camera-pipeline noise: what a phone or an embedded camera does to a picture before the model sees it.

``camera_jpeg``: a JPEG at the qualities cameras and messaging apps use (90 down to 30; ImageNet-C's
``jpeg_compression`` covers 25 down to 7). ``camera_resize``: the picture scaled down by a camera
pipeline's bilinear filter and back up with bicubic (another interpolation than the way down, as a
preview or a model server's resize would). Conventions: see :mod:`.noise`.
"""
from __future__ import annotations

import numpy as np

from .digital import jpeg, resize
from .noise import clip

CAMERA_JPEG = (90, 75, 60, 45, 30)  # Pillow JPEG quality
CAMERA_RESIZE = (0.875, 0.75, 0.625, 0.5, 0.375)  # side after the downscale / side


def camera_jpeg(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    return clip(jpeg(x, CAMERA_JPEG[severity - 1]))


def camera_resize(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    f = CAMERA_RESIZE[severity - 1]
    h, w = x.shape[-2:]
    small = resize(x, (max(1, round(h * f)), max(1, round(w * f))), "bilinear")
    return clip(resize(small, (h, w), "bicubic"))
