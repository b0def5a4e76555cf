"""Shared pieces of the property-based fuzzers (tests/fuzz): byte mutations, odd JSON values, and
the one property every parser keeps, through the entry a user calls.

The property: a result of the expected type, or the project's own error (an EdgeRobustError with a
message; exit 2 through the CLI), never another exception or a traceback, never a run longer than
BOUND_S, never a file written outside the output folder.

How many examples each parser gets is the Hypothesis profile's: ``ci`` (pyproject's addopts, a few
hundred) or ``long`` (10,000: ``pytest tests/fuzz --hypothesis-profile=long``). Profiles are
registered in tests/conftest.py.
"""
from __future__ import annotations

import collections
import math
import os
import tempfile
import time
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from edgerobust.errors import EdgeRobustError

# A parser that takes longer than this on one input hangs, as far as these tests are concerned.
BOUND_S = 20.0

# Per-test settings on top of the loaded profile (which sets max_examples).
FUZZ = settings(deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large, HealthCheck.filter_too_much])


def examples(share: float = 1.0) -> settings:
    """FUZZ with ``share`` of the profile's examples (at least 10): for entries that cost a CLI
    run or an ONNX session per example."""
    n = max(10, math.ceil(settings.default.max_examples * share))
    return settings(FUZZ, max_examples=n)


@st.composite
def mutated(draw, seed: bytes):
    """``seed`` with a few bytes overwritten, a slice deleted or inserted, and maybe truncated."""
    data = bytearray(seed)
    for _ in range(draw(st.integers(0, 8))):
        if not data:
            break
        i = draw(st.integers(0, len(data) - 1))
        data[i] = draw(st.integers(0, 255))
    if draw(st.booleans()) and data:
        i = draw(st.integers(0, len(data) - 1))
        del data[i:i + draw(st.integers(1, 64))]
    if draw(st.booleans()):
        i = draw(st.integers(0, len(data)))
        data[i:i] = draw(st.binary(max_size=32))
    if draw(st.booleans()):
        data = data[:draw(st.integers(0, len(data)))]
    return bytes(data)


def inputs(seed: bytes):
    """Random bytes, or ``seed`` mutated."""
    return st.one_of(st.binary(max_size=2048), mutated(seed))


# Scalars a parser meets in a hostile file: huge, negative, NaN, Inf, unicode, empty.
ODD_SCALARS = (st.none() | st.booleans() | st.integers() | st.sampled_from([0, -1, 2**63, -2**63, 10**30])
               | st.floats() | st.sampled_from([float("nan"), float("inf"), -float("inf"), 1e308, -0.0])
               | st.text(max_size=8) | st.sampled_from(["", "é∂\u202e", "\x00", "1e9999", "NaN"]))


def odd_values(max_leaves: int = 6):
    """Arbitrary JSON-like values (lists and dicts nested over ODD_SCALARS)."""
    return st.recursive(ODD_SCALARS, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
                        max_leaves=max_leaves)


@st.composite
def replaced(draw, doc, depth: int = 3, into_lists: bool = False):
    """A copy of the JSON-like ``doc`` with one value somewhere inside (down to ``depth`` levels,
    through dicts, and through lists too with ``into_lists``) replaced by an odd value, deleted, or
    an extra key (or item) added."""
    import copy

    doc = copy.deepcopy(doc)
    node = doc
    for _ in range(draw(st.integers(0, depth))):
        if isinstance(node, dict):
            inner = [k for k, v in node.items() if isinstance(v, (dict, list) if into_lists else dict) and v]
        else:
            inner = [i for i, v in enumerate(node) if isinstance(v, (dict, list)) and v]
        if not inner:
            break
        node = node[draw(st.sampled_from(sorted(inner)))]
    action = draw(st.sampled_from(["replace", "delete", "add"]))
    if isinstance(node, list):
        i = draw(st.integers(0, max(len(node) - 1, 0)))
        if action == "add" or not node:
            node.insert(i, draw(odd_values()))
        elif action == "delete":
            del node[i]
        else:
            node[i] = draw(odd_values())
    elif action == "add" or not node:
        node[draw(st.text(min_size=1, max_size=6))] = draw(odd_values())
    else:
        key = draw(st.sampled_from(sorted(node)))
        if action == "delete":
            del node[key]
        else:
            node[key] = draw(odd_values())
    return doc


def replaced_deep(doc, depth: int = 5):
    """:func:`replaced` through lists as well (a sample of a calibration, a row of runtimes.json)."""
    return replaced(doc, depth, into_lists=True)


@st.composite
def npz_changed(draw, arrays: dict, odd, suffix: str = "x") -> bytes:
    """The npz of ``arrays`` (one of them ``meta``, JSON in a 0-d string array) rewritten with
    np.savez (pickles allowed) and one array replaced by ``odd(array)`` (a strategy), deleted, or
    added under its name + ``suffix``, or its metadata changed (:func:`replaced_deep`, or not
    JSON at all)."""
    import io
    import json

    import numpy as np

    arrays = dict(arrays)
    meta = json.loads(str(arrays.pop("meta")))
    action = draw(st.sampled_from(["array", "array", "delete", "extra", "meta", "meta"]))
    if action == "meta":
        text = draw(st.one_of(replaced_deep(meta).map(json.dumps), st.text(max_size=20), odd_values().map(json.dumps)))
        arrays["meta"] = np.array(text)
    else:
        arrays["meta"] = np.array(json.dumps(meta))
        key = draw(st.sampled_from(sorted(k for k in arrays if k != "meta")))
        if action == "delete":
            del arrays[key]
        else:
            arrays[key if action == "array" else key + suffix] = draw(odd(arrays[key]))
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


# What every fuzzed case came to, per test: tests/fuzz/conftest.py prints it after the run.
TALLY: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
SLOWEST: dict[str, float] = collections.defaultdict(float)


def record(outcome: str, elapsed: float) -> None:
    """Count one case of the running test as ``outcome`` ('result' or 'error'; the crash test: the
    signal, or 'finished first')."""
    test = os.environ.get("PYTEST_CURRENT_TEST", "?").split(" ")[0].rsplit("::", 1)[-1]
    TALLY[test][outcome] += 1
    SLOWEST[test] = max(SLOWEST[test], elapsed)


def files_under(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in Path(root).rglob("*")}


def check_reader(reader, data: bytes, name: str, valid: type):
    """Write ``data`` to a file called ``name`` in a fresh folder and read it with ``reader``: a
    ``valid`` object or an EdgeRobustError with a message, within BOUND_S, and nothing written."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / name
        path.write_bytes(data)
        expect_error(lambda: reader(path), valid, Path(d), allowed=())


def expect_error(call, valid: type, root: Path | None = None, allowed=()) -> object | None:
    """Run ``call()``: it returns a ``valid`` object or raises an EdgeRobustError with a message,
    within BOUND_S; when ``root`` is given, nothing new appears under it outside the ``allowed``
    relative paths (and their contents). Returns the result (None after an error)."""
    before = files_under(root) if root is not None else set()
    t0 = time.monotonic()
    try:
        result = call()
    except EdgeRobustError as exc:
        assert exc.what, "an error without a message"
        result = None
    else:
        assert isinstance(result, valid), type(result)
    finally:
        elapsed = time.monotonic() - t0
    record("result" if result is not None else "error", elapsed)
    assert elapsed < BOUND_S, f"took {elapsed:.1f} s (bound {BOUND_S} s)"
    if root is not None:
        new = files_under(root) - before
        stray = {p for p in new if not any(p == a or p.startswith(a.rstrip("/") + "/") for a in allowed)}
        assert not stray, f"wrote outside the output folder: {sorted(stray)[:5]}"
    return result


def expect_cli(result, root: Path | None = None, before: set[str] | None = None, allowed=()) -> None:
    """A CLI result (tests/_fixtures_gauntlet.cli): exit 0, or exit 2 with one 'error:' line; no
    traceback; with ``root`` and ``before``, no new file under root outside ``allowed``."""
    record("result" if result.exit_code == 0 else "error", 0.0)
    assert "Traceback" not in result.output, result.output[-2000:]
    assert result.exit_code in (0, 2), f"exit {result.exit_code}: {result.output[-2000:]}\n{result.exception!r}"
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    if result.exit_code == 2:
        assert "error:" in result.output, result.output[-2000:]
    if root is not None and before is not None:
        new = files_under(root) - before
        stray = {p for p in new if not any(p == a or p.startswith(a.rstrip("/") + "/") for a in allowed)}
        assert not stray, f"wrote outside the output folder: {sorted(stray)[:5]}"


def env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))
