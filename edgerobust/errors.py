"""The one exception family for everything a user can cause."""
from __future__ import annotations


class EdgeRobustError(Exception):
    """A failure the user caused and can fix: a bad file, a bad flag, a mismatched bundle.

    The CLI prints ``what``, ``why`` and ``fix`` as one message and exits with code 2;
    anything else that escapes is an internal bug and keeps its traceback.
    """

    exit_code = 2

    def __init__(self, what: str, why: str | None = None, fix: str | None = None):
        super().__init__(what)
        self.what = what
        self.why = why
        self.fix = fix

    def __str__(self) -> str:
        parts = [self.what]
        if self.why:
            parts.append(f"Why: {self.why}")
        if self.fix:
            parts.append(f"What to do: {self.fix}")
        return "\n".join(parts)


class UsageError(EdgeRobustError):
    """A flag or option value that cannot be used."""


class ModelLoadError(EdgeRobustError):
    """A model file that cannot be loaded (missing, corrupt, unsafe, wrong architecture)."""


class UnsafeModelError(ModelLoadError):
    """Loading the file would execute arbitrary code from its pickle."""


class DataError(EdgeRobustError):
    """A data source that cannot be read or used."""


class BundleError(EdgeRobustError):
    """A bundle (or a file in it) that is missing, corrupt, tampered with or mismatched."""


class ProfileError(EdgeRobustError):
    """A device profile that is unknown or invalid."""


class QualityGateError(EdgeRobustError):
    """A compressed model failed a check (parity, int8 accuracy drop) and was not shipped."""


class ExportError(EdgeRobustError):
    """A model that cannot be exported to ONNX or fails verification."""


class DependencyError(EdgeRobustError):
    """An optional dependency needed for this command is not installed."""


def require(module: str, extra: str = "compress", package: str | None = None):
    """Import an optional dependency or raise a DependencyError naming the pip extra (``package``: the
    name pip installs it by, where it differs from ``module``)."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - exercised in torch-free venvs
        raise DependencyError(
            f"This command needs the Python package '{package or module}', which is not installed.",
            why=str(exc),
            fix=f"pip install 'edgerobust[{extra}]'",
        ) from exc
