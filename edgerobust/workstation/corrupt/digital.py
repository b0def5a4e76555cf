"""The digital corruptions of ImageNet-C (Hendrycks & Dietterich 2019): contrast, brightness, saturate,
JPEG, pixelate, elastic transform.

Brightness and saturation change HSV's value and saturation as ImageNet-C does (through
scikit-image's HSV), written here in RGB: raising V by c multiplies every channel by min(V + c, 1) / V,
which keeps hue and saturation. Saturation needs three channels (it is left out of one-channel
data, :func:`needs_rgb`). JPEG and pixelate go through Pillow; elastic's pixel parameters are scaled
to the image as the blurs are (:func:`.blur.scale`), its affine warp and displacement applied in one
interpolation. Conventions: see :mod:`.noise`.
"""
from __future__ import annotations

import io

import numpy as np

from .blur import scale
from .deps import pil_image, scipy_ndimage
from .noise import clip

CONTRAST = (0.4, 0.3, 0.2, 0.1, 0.05)  # factor on the distance to each channel's mean
BRIGHTNESS = (0.1, 0.2, 0.3, 0.4, 0.5)  # added to HSV value
SATURATE = ((0.3, 0), (0.1, 0), (2, 0), (5, 0.1), (20, 0.2))  # HSV saturation * a + b
JPEG = (25, 18, 15, 10, 7)  # Pillow JPEG quality
PIXELATE = (0.6, 0.5, 0.4, 0.3, 0.25)  # side of the box-downsampled image / side
# elastic: displacement strength, smoothness sigma, affine jitter, in units of 244 px at 224 px (ImageNet-C)
ELASTIC = ((2, 0.7, 0.1), (2, 0.08, 0.2), (0.05, 0.01, 0.02), (0.07, 0.01, 0.02), (0.12, 0.01, 0.02))


def needs_rgb(shape: tuple[int, ...]) -> str | None:
    return None if shape[1] == 3 else f"saturation is a property of colour: it needs 3 channels, these inputs have {shape[1]}"


def needs_gray_or_rgb(shape: tuple[int, ...]) -> str | None:
    return None if shape[1] in (1, 3) else f"JPEG encodes 1- or 3-channel images; these inputs have {shape[1]} channels"


def contrast(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    mean = x.mean(axis=(2, 3), keepdims=True)
    return clip((x - mean) * CONTRAST[severity - 1] + mean)


def brightness(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    v = x.max(axis=1, keepdims=True)
    up = np.minimum(v + BRIGHTNESS[severity - 1], 1.0)
    out = np.where(v > 0, x * (up / np.where(v > 0, v, 1)), up)  # black has no hue: it turns gray
    return clip(out)


def saturate(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    a, b = SATURATE[severity - 1]
    v = x.max(axis=1, keepdims=True)
    s = np.where(v > 0, (v - x.min(axis=1, keepdims=True)) / np.where(v > 0, v, 1), 0)
    s2 = np.clip(s * a + b, 0, 1)
    ratio = np.where(s > 0, s2 / np.where(s > 0, s, 1), 0)
    # a gray pixel (s = 0) given saturation b > 0 takes hue 0 (red), as scikit-image's hsv2rgb gives it
    red = np.concatenate([v, v * (1 - s2), v * (1 - s2)], axis=1)
    return clip(np.where(s > 0, v - (v - x) * ratio, red))


def to_uint8(img: np.ndarray) -> np.ndarray:
    """One (C, H, W) image in [0, 1] as the (H, W) or (H, W, 3) uint8 array Pillow takes."""
    u = np.round(np.clip(img, 0, 1) * 255).astype(np.uint8)
    return u[0] if u.shape[0] == 1 else np.moveaxis(u, 0, -1)


def from_uint8(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float32) / 255
    return a[None] if a.ndim == 2 else np.moveaxis(a, -1, 0)


def jpeg(x: np.ndarray, quality: int) -> np.ndarray:
    """Every image through a Pillow JPEG of ``quality`` (4:2:0 chroma for colour, Pillow's default)."""
    Image = pil_image()

    out = np.empty_like(x)
    for n in range(len(x)):
        buf = io.BytesIO()
        Image.fromarray(to_uint8(x[n])).save(buf, format="JPEG", quality=int(quality))
        out[n] = from_uint8(Image.open(io.BytesIO(buf.getvalue())))
    return out


def jpeg_compression(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    return clip(jpeg(x, JPEG[severity - 1]))


def resize(x: np.ndarray, size: tuple[int, int], method: str) -> np.ndarray:
    """Every channel of every image resized to ``size`` (h, w) by Pillow in float ('F' mode), no rounding."""
    Image = pil_image()

    f = {"box": Image.Resampling.BOX, "bilinear": Image.Resampling.BILINEAR,
         "bicubic": Image.Resampling.BICUBIC, "nearest": Image.Resampling.NEAREST}[method]
    out = np.empty((*x.shape[:2], *size), dtype=np.float32)
    for n in range(x.shape[0]):
        for c in range(x.shape[1]):
            img = Image.fromarray(np.ascontiguousarray(x[n, c], dtype=np.float32), mode="F")
            out[n, c] = np.asarray(img.resize((size[1], size[0]), f), dtype=np.float32)
    return out


def pixelate(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    c = PIXELATE[severity - 1]
    h, w = x.shape[-2:]
    small = resize(x, (max(1, int(h * c)), max(1, int(w * c))), "box")
    return clip(resize(small, (h, w), "box"))


def elastic_transform(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """A random affine warp (three points jittered), then a smooth random displacement field."""
    ndimage = scipy_ndimage()

    unit = 244 * scale(x)
    alpha, sigma, jitter = (v * unit for v in ELASTIC[severity - 1])
    h, w = x.shape[-2:]
    centre, half = np.array([w // 2, h // 2], dtype=np.float64), min(h, w) // 3
    src = np.array([centre + half, [centre[0] + half, centre[1] - half], centre - half])
    yy, xx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    out = np.empty_like(x)
    for n in range(len(x)):
        dst = src + rng.uniform(-jitter, jitter, size=src.shape)
        # the inverse affine map (output point -> input point) from the three point pairs
        inv = np.linalg.lstsq(np.c_[dst, np.ones(3)], src, rcond=None)[0]
        dx = ndimage.gaussian_filter(rng.uniform(-1, 1, (h, w)), sigma, mode="reflect", truncate=3) * alpha
        dy = ndimage.gaussian_filter(rng.uniform(-1, 1, (h, w)), sigma, mode="reflect", truncate=3) * alpha
        px, py = xx + dx, yy + dy
        sx, sy = px * inv[0, 0] + py * inv[1, 0] + inv[2, 0], px * inv[0, 1] + py * inv[1, 1] + inv[2, 1]
        for c in range(x.shape[1]):
            out[n, c] = ndimage.map_coordinates(x[n, c], [sy, sx], order=1, mode="mirror")
    return clip(out)
