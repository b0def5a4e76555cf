"""scipy and Pillow, imported where a corruption first needs them: a missing one is a DependencyError
(one message naming ``pip install 'edgerobust[compress]'``, exit 2), never an ImportError traceback.
:func:`require_corruption_deps` checks both before any work (compress with corruptions, `edgerobust corrupt`).
"""
from __future__ import annotations

from edgerobust.errors import require


def scipy_ndimage():
    """``scipy.ndimage`` (filters, zoom, map_coordinates), or a DependencyError."""
    return require("scipy.ndimage", extra="compress", package="scipy")


def pil_image():
    """``PIL.Image`` (JPEG, resizing), or a DependencyError."""
    return require("PIL.Image", extra="compress", package="pillow")


def require_corruption_deps() -> None:
    """Both, up front: a run that makes corruption sets fails at once, not after its other work."""
    scipy_ndimage()
    pil_image()
