"""edgerobust: compress PyTorch models for edge devices and audit the deployed model's robustness.

The compress side needs torch (``pip install 'edgerobust[compress]'``); the audit side needs only
numpy + onnxruntime. Heavy names are imported lazily so ``import edgerobust`` stays torch-free.
"""
from __future__ import annotations

__version__ = "0.1.0"

_LAZY = {
    "compress": ("edgerobust.workstation.compress", "compress"),
    "CompressConfig": ("edgerobust.workstation.configs", "CompressConfig"),
    "PrepareConfig": ("edgerobust.workstation.configs", "PrepareConfig"),
    "PruneConfig": ("edgerobust.workstation.configs", "PruneConfig"),
    "TrainConfig": ("edgerobust.workstation.configs", "TrainConfig"),
    "QuantConfig": ("edgerobust.workstation.configs", "QuantConfig"),
    "CompressResult": ("edgerobust.workstation.compress", "CompressResult"),
    "resolve_target": ("edgerobust.workstation.target", "resolve_target"),
    "TargetPlan": ("edgerobust.workstation.target", "TargetPlan"),
    "SweepConfig": ("edgerobust.research.configs", "SweepConfig"),
    "sweep": ("edgerobust.research.sweep", "sweep"),
    "audit": ("edgerobust.device.audit", "audit"),
    "AuditConfig": ("edgerobust.device.audit", "AuditConfig"),
    "AuditReport": ("edgerobust.device.audit", "AuditReport"),
    "EdgeRobustError": ("edgerobust.errors", "EdgeRobustError"),
    "Bundle": ("edgerobust.device.files.bundle", "Bundle"),
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        mod, attr = _LAZY[name]
        return getattr(importlib.import_module(mod), attr)
    raise AttributeError(f"module 'edgerobust' has no attribute {name!r}")
