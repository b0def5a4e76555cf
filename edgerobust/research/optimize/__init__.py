"""Deploy to a budget: search the compressions for the most robust model (or the fastest) that meets a
device's latency budget, scored on the deployed runtime. See :mod:`.search`."""
from edgerobust.research.optimize.configs import AIMS, OptimizeConfig, SearchSpace

__all__ = ["AIMS", "OptimizeConfig", "SearchSpace", "optimize", "OptimizeResult"]


def __getattr__(name: str):
    if name in ("optimize", "OptimizeResult"):
        import importlib

        return getattr(importlib.import_module(f"{__name__}.search"), name)
    raise AttributeError(name)
