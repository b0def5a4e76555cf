"""edgerobust: compress PyTorch models for edge devices and audit the deployed model's robustness.

The compress side needs torch (``pip install 'edgerobust[compress]'``); the audit side needs only
numpy + onnxruntime. Heavy names are imported lazily so ``import edgerobust`` stays torch-free.
"""
from __future__ import annotations

import logging

__version__ = "0.1.0"

# The library logs its status lines and warnings under this logger and prints nothing itself; the
# application chooses the handlers (the CLI's are in edgerobust.ui). See edgerobust.events.
logging.getLogger(__name__).addHandler(logging.NullHandler())

_LAZY = {
    "compress": ("edgerobust.workstation.compress", "compress"),
    "CompressConfig": ("edgerobust.workstation.configs", "CompressConfig"),
    "PrepareConfig": ("edgerobust.workstation.configs", "PrepareConfig"),
    "PruneConfig": ("edgerobust.workstation.configs", "PruneConfig"),
    "TrainConfig": ("edgerobust.workstation.configs", "TrainConfig"),
    "QuantConfig": ("edgerobust.workstation.configs", "QuantConfig"),
    "CompressResult": ("edgerobust.workstation.compress", "CompressResult"),
    "resolve_target": ("edgerobust.workstation.pipeline.target", "resolve_target"),
    "TargetPlan": ("edgerobust.workstation.pipeline.target", "TargetPlan"),
    "SweepConfig": ("edgerobust.research.configs", "SweepConfig"),
    "sweep": ("edgerobust.research.sweep", "sweep"),
    "optimize": ("edgerobust.research.optimize.search", "optimize"),
    "OptimizeConfig": ("edgerobust.research.optimize.configs", "OptimizeConfig"),
    "OptimizeResult": ("edgerobust.research.optimize.search", "OptimizeResult"),
    "audit": ("edgerobust.edge.audit", "audit"),
    "AuditConfig": ("edgerobust.edge.audit", "AuditConfig"),
    "AuditReport": ("edgerobust.edge.audit", "AuditReport"),
    "EdgeRobustError": ("edgerobust.errors", "EdgeRobustError"),
    "Bundle": ("edgerobust.edge.files.bundle", "Bundle"),
    "load_config": ("edgerobust.configio", "load_config"),
    "from_dict": ("edgerobust.configio", "from_dict"),
    "to_dict": ("edgerobust.configio", "to_dict"),
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        mod, attr = _LAZY[name]
        return getattr(importlib.import_module(mod), attr)
    raise AttributeError(f"module 'edgerobust' has no attribute {name!r}")
