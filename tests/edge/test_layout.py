"""The folder layout is the architecture: the device half never reaches torch or the workstation
half, even through a function-local import; the package has no import cycle; modules stay small."""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from onnx_models import write_profile

PKG = Path(__file__).resolve().parents[2] / "edgerobust"
TORCH = ("torch", "torchvision", "torch_pruning", "torchattacks", "timm")
CORE = ("errors", "eps", "ui", "defaults", "registries", "__init__")  # __main__ is the CLI's entry


def _modules() -> dict[str, Path]:
    out = {}
    for p in PKG.rglob("*.py"):
        parts = list(p.relative_to(PKG.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = p
    return out


def _imports(name: str, path: Path) -> set[str]:
    """Absolute names of every module ``name`` imports, function-local and TYPE_CHECKING-free."""
    tree = ast.parse(path.read_text())
    skip = set()
    for node in ast.walk(tree):  # `if TYPE_CHECKING:` blocks import nothing at run time
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
            skip.update(id(n) for b in node.body for n in ast.walk(b))
    pkg = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)
    return found


MODULES = _modules()


@pytest.mark.parametrize("name", sorted(n for n in MODULES if n.startswith("edgerobust.edge")
                                        or n.split(".")[-1] in CORE and n.count(".") <= 1))
def test_device_half_never_imports_torch_or_the_workstation(name):
    bad = {i for i in _imports(name, MODULES[name])
           if i.split(".")[0] in TORCH or i.startswith(("edgerobust.workstation", "edgerobust.research",
                                                       "edgerobust.cli"))}
    assert not bad, f"{name} imports {sorted(bad)}"


def test_no_private_name_is_imported_from_another_module():
    """A name starting with ``_`` is its module's own: another module imports a public one (issue 29)."""
    bad = []
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("edgerobust"):
                bad += [f"{name} imports {node.module}.{a.name}" for a in node.names
                        if a.name.startswith("_") and not a.name.startswith("__")]
    assert not bad, bad


def test_no_import_cycles():
    graph = {n: {i for i in _imports(n, p) if i in MODULES and i != n and i != "edgerobust"}
             for n, p in MODULES.items()}
    seen, stack, cycles = {}, [], []

    def visit(v):
        seen[v] = "open"
        stack.append(v)
        for w in graph[v]:
            if seen.get(w) == "open":
                cycles.append(stack[stack.index(w):] + [w])
            elif w not in seen:
                visit(w)
        stack.pop()
        seen[v] = "done"

    for v in sorted(graph):
        if v not in seen:
            visit(v)
    assert not cycles, cycles


@pytest.mark.parametrize("name", sorted(n for n in MODULES if n.startswith("edgerobust.edge.files.")))
def test_bundle_files_never_import_the_scores(name):
    """edge/files (bundle I/O) is the lower layer: edge/scores reads bundles, never the other way."""
    bad = {i for i in _imports(name, MODULES[name]) if i == "edgerobust.edge.scores"
           or i.startswith("edgerobust.edge.scores.")}
    assert not bad, f"{name} imports {sorted(bad)}"


def test_modules_functions_and_classes_stay_small():
    """A module holds at most 400 lines, a function fewer than 81, a class body at most 200."""
    big = []
    for name, path in MODULES.items():
        src = path.read_text()
        if len(src.splitlines()) > 400:
            big.append(f"{name}: {len(src.splitlines())} lines")
        for node in ast.walk(ast.parse(src)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 80:
                big.append(f"{name}.{node.name}: {node.end_lineno - node.lineno + 1} lines")
            if isinstance(node, ast.ClassDef) and node.end_lineno - node.lineno + 1 > 200:
                big.append(f"class {name}.{node.name}: {node.end_lineno - node.lineno + 1} lines")
    assert not big, big


# torch as if not installed: the path finder does not see it (importlib.util.find_spec says None,
# as libraries that probe for torch expect), so importing it raises ModuleNotFoundError
BLOCK_TORCH = """
import importlib, importlib.machinery, pkgutil, sys
class Hidden(importlib.machinery.PathFinder):
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name.split('.')[0] in {torch}:
            return None
        return super().find_spec(name, path, target)
sys.meta_path[:] = [Hidden if f is importlib.machinery.PathFinder else f for f in sys.meta_path]
import edgerobust.edge as d
for m in pkgutil.walk_packages(d.__path__, 'edgerobust.edge.'):
    importlib.import_module(m.name)
from edgerobust.edge.audit import AuditConfig, audit
query = None
if importlib.util.find_spec('art') is not None:
    from edgerobust.edge.scores.query import QueryConfig
    query = QueryConfig(eps=('8/255',), queries=20, samples=10)
r = audit(AuditConfig(model={model!r}, profile={profile!r}, measure_memory=False, show_progress=False,
                      query=query))
assert 'torch' not in sys.modules
print('SETS', len(r.sets), 'QUERY', len(r.query))
"""


def test_audit_runs_with_torch_blocked_by_an_import_hook(compressed, tmp_path):
    profile = str(write_profile(tmp_path / "fast.toml"))  # what is imported is under test, not the timings
    code = BLOCK_TORCH.format(torch=set(TORCH), model=str(compressed.bundle / "model.onnx"), profile=profile)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "SETS" in out.stdout
    try:
        import art  # noqa: F401  (the [query] extra)
    except ImportError:
        return
    assert "QUERY 1" in out.stdout  # the query attack on the runtime ran without torch
