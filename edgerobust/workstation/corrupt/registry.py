"""Every corruption a user may name, with its family, parameters per severity and what it needs.

One entry shape, as the attacks registry: ``CORRUPTIONS[name]`` holds the function (batch, severity,
rng -> batch), the family, a summary, the parameters of severities 1..5 (recorded in each set's
metadata) and ``needs``: the reason it cannot run on inputs of a given shape, or None. ``LEFT_OUT``
names the ImageNet-C corruptions not implemented, with the reason. Texts users type (``default``,
``all``, ``none``, a family, comma lists) are read by :func:`parse_corruptions`; severities by
:func:`parse_severities`. Torch-free.
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Callable, Optional

from edgerobust.errors import UsageError

from . import blur, camera, digital, noise, weather

PAPER = "Hendrycks & Dietterich 2019, ImageNet-C"
SEVERITIES = (1, 2, 3, 4, 5)
DEFAULT_SEVERITIES = (1, 3, 5)
FAMILIES = ("noise", "blur", "weather", "digital", "camera")


@dataclass(frozen=True)
class CorruptionEntry:
    name: str
    family: str
    apply: Callable
    summary: str
    params: tuple  # per severity 1..5
    reference: str = PAPER
    needs: Optional[Callable[[tuple], Optional[str]]] = None

    def reason_out(self, shape: tuple[int, ...]) -> str | None:
        """Why this corruption cannot run on inputs of ``shape`` (N, C, H, W), or None."""
        return self.needs(tuple(shape)) if self.needs is not None else None


E = CorruptionEntry
CORRUPTIONS = {e.name: e for e in (
    E("gaussian_noise", "noise", noise.gaussian_noise, "additive gaussian noise, std per severity", noise.GAUSSIAN),
    E("shot_noise", "noise", noise.shot_noise, "Poisson (photon) noise, photons per unit", noise.SHOT),
    E("impulse_noise", "noise", noise.impulse_noise, "salt and pepper, share of values", noise.IMPULSE),
    E("speckle_noise", "noise", noise.speckle_noise, "multiplicative gaussian noise, std", noise.SPECKLE),
    E("defocus_blur", "blur", blur.defocus_blur, "disk kernel (radius, alias sigma; px at 224)", blur.DEFOCUS),
    E("gaussian_blur", "blur", blur.gaussian_blur, "gaussian kernel (sigma; px at 224)", blur.GAUSSIAN),
    E("motion_blur", "blur", blur.motion_blur, "one-sided motion trail at a random angle (radius, sigma; px at 224)",
      blur.MOTION),
    E("glass_blur", "blur", blur.glass_blur, "blur, local pixel shuffling, blur (sigma, max shift, iterations)",
      blur.GLASS),
    E("zoom_blur", "blur", blur.zoom_blur, "average of centre zooms (zoom factors)", blur.ZOOM),
    E("fog", "weather", weather.fog, "plasma-fractal haze (strength, fractal decay)", weather.FOG),
    E("snow", "weather", weather.snow, "motion-blurred flake layer over a brightened image", weather.SNOW),
    E("contrast", "digital", digital.contrast, "distance to the channel mean scaled by a factor", digital.CONTRAST),
    E("brightness", "digital", digital.brightness, "HSV value raised by c", digital.BRIGHTNESS),
    E("saturate", "digital", digital.saturate, "HSV saturation * a + b", digital.SATURATE, needs=digital.needs_rgb),
    E("jpeg_compression", "digital", digital.jpeg_compression, "JPEG at quality 25 down to 7", digital.JPEG,
      needs=digital.needs_gray_or_rgb),
    E("pixelate", "digital", digital.pixelate, "box downsampling to a share of the side and back", digital.PIXELATE),
    E("elastic_transform", "digital", digital.elastic_transform, "affine jitter and smooth random displacement",
      digital.ELASTIC),
    E("camera_jpeg", "camera", camera.camera_jpeg, "JPEG at camera qualities 90 down to 30", camera.CAMERA_JPEG,
      reference="camera pipeline", needs=digital.needs_gray_or_rgb),
    E("camera_resize", "camera", camera.camera_resize, "bilinear downscale, bicubic upscale (share of the side)",
      camera.CAMERA_RESIZE, reference="camera pipeline"),
)}

# ImageNet-C corruptions that are not here, and why (recorded in every manifest that asks for all)
LEFT_OUT = {
    "frost": "it blends ImageNet-C's photographs of frost; edgerobust ships no image assets and downloads nothing",
    "spatter": "ImageNet-C's recipe needs OpenCV's Canny edges and distance transform (OpenCV is not a dependency)",
}

# The standard subset: every family, the fastest members (digits, 360 samples: about 2 s in all)
DEFAULT_CORRUPTIONS = ("gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "motion_blur", "fog",
                       "contrast", "brightness", "jpeg_compression", "pixelate", "camera_jpeg", "camera_resize")


def help_text() -> str:
    """The names by family, for the help of the option that takes them."""
    fam = "; ".join(f"{f}: {', '.join(n for n, e in CORRUPTIONS.items() if e.family == f)}" for f in FAMILIES)
    return (f"{fam}. `default` is {', '.join(DEFAULT_CORRUPTIONS)}; `all` every one; a family name its members; "
            f"`none` no sets. Left out: {', '.join(f'{k} ({v})' for k, v in LEFT_OUT.items())}")


def _unknown(name: str, text: str) -> UsageError:
    words = list(CORRUPTIONS) + list(FAMILIES) + ["default", "all", "none"]
    if name in LEFT_OUT:
        return UsageError(f"The corruption {name!r} is not available.", why=f"It is left out: {LEFT_OUT[name]}.",
                          fix="Choose others (`corruptions` all lists every one available).")
    close = difflib.get_close_matches(name, words, n=1, cutoff=0.5)
    return UsageError(f"Unknown corruption {name!r} in `corruptions` {text!r}." if name else
                      f"`corruptions` {text!r} has an empty entry.",
                      why=f"Known: {', '.join(CORRUPTIONS)}; families: {', '.join(FAMILIES)}; or default, all, none.",
                      fix=f"Did you mean {close[0]!r}?" if close else "Pick names from that list, comma-separated.")


def parse_corruptions(value) -> tuple[str, ...]:
    """The corruption names a text (``default``, ``all``, ``none``, families and names, comma-separated) or a
    list of names stands for, in registry order, each once; UsageError naming the closest for a typo."""
    if value is None:
        return ()
    items = [str(v) for v in value] if isinstance(value, (list, tuple)) else str(value).split(",")
    items = [t.strip().lower().replace("-", "_") for t in items]
    if items in ([""], ["none"]) or not items:
        return ()
    chosen: set[str] = set()
    for t in items:
        if t == "default":
            chosen.update(DEFAULT_CORRUPTIONS)
        elif t == "all":
            chosen.update(CORRUPTIONS)
        elif t in FAMILIES:
            chosen.update(n for n, e in CORRUPTIONS.items() if e.family == t)
        elif t in CORRUPTIONS:
            chosen.add(t)
        else:
            raise _unknown(t, str(value) if not isinstance(value, (list, tuple)) else ",".join(map(str, value)))
    return tuple(n for n in CORRUPTIONS if n in chosen)


def parse_severities(value) -> tuple[int, ...]:
    """Severities 1..5 from ``"1,3,5"`` or a list, ascending, each once; UsageError for 0, 6 or a non-number."""
    items = list(value) if isinstance(value, (list, tuple)) else str(value).split(",")
    out = set()
    for t in items:
        text = str(t).strip()
        if isinstance(t, bool) or not re.fullmatch(r"-?[0-9]{1,3}", text) or int(text) not in SEVERITIES:
            raise UsageError(f"`corruption_severities` must be whole numbers from 1 to 5; got {text!r}.",
                             why="ImageNet-C defines five severities per corruption, 1 the mildest.",
                             fix="Write e.g. 1,3,5 (or 1,2,3,4,5 for all five).")
        out.add(int(text))
    if not out:
        raise UsageError("`corruption_severities` is empty.", fix="Write e.g. 1,3,5.")
    return tuple(sorted(out))


def load_corruptions(value, name: str, where: str, data) -> tuple[str, ...]:
    """configio's reader for a ``corruptions`` key (a text or a list of names)."""
    return parse_corruptions(value)


def load_severities(value, name: str, where: str, data) -> tuple[int, ...]:
    """configio's reader for a ``corruption_severities`` key (a text or a list of whole numbers)."""
    return parse_severities(value)
