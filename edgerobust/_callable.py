"""Let `edgerobust.compress(...)` / `edgerobust.audit(...)` work although each is also a module name.

Importing the submodule `edgerobust.compress` replaces the package attribute `compress` with the
module; making that module callable keeps `edgerobust.compress(config)` meaning the function.
"""
from __future__ import annotations

import sys
import types
from typing import Callable


def make_module_callable(module_name: str, fn: Callable) -> None:
    class _CallableModule(types.ModuleType):
        def __call__(self, *args, **kwargs):
            return fn(*args, **kwargs)

    _CallableModule.__call__.__doc__ = fn.__doc__
    sys.modules[module_name].__class__ = _CallableModule
