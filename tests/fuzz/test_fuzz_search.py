"""Fuzzing what edgerobust reads back from its own folders after a user (or a crash) touched them: a bundle's
common-corruption sets, read by the audit, and the storage of `edgerobust optimize` (its SQLite study, the
settings' fingerprint and the trial records in it, the folder's marker), read when a search resumes in an
existing `out`. Seeds are real files the project's own code wrote, mutated at byte level and structurally;
every input gives a valid result or one EdgeRobustError, never another exception, and nothing is written
outside the output folder (tests/fuzzkit.py: the property, the strategies)."""
from __future__ import annotations

import hashlib
import io
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgerobust.edge.files.bundle import EvalSet
from edgerobust.edge.files.corruptset import CorruptionSet
from edgerobust.edge.scores.corruption import check_corruption_sets
from fuzzkit import FUZZ, examples, expect_error, files_under, inputs, npz_changed, odd_values, replaced_deep

# =============================================================================================
# corruption sets


@pytest.fixture(scope="module")
def corrupted(tiny_bundle, tmp_path_factory):
    """A copy of the tiny bundle with one corruption set made by `corrupt_bundle` (gaussian noise, severity 1)."""
    from edgerobust.workstation.corrupt.sets import CorruptConfig, corrupt_bundle

    bundle = shutil.copytree(tiny_bundle, tmp_path_factory.mktemp("corrupted") / "tiny")
    corrupt_bundle(CorruptConfig(bundle, corruptions="gaussian_noise", corruption_severities="1"))
    path = bundle / "corruptions" / "gaussian_noise_s1.npz"
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    return {"bundle": bundle, "path": path, "bytes": path.read_bytes(), "arrays": arrays,
            "eval": EvalSet.load(bundle / "eval.npz")}


def odd_set_arrays(like: np.ndarray):
    """What a foreign or hand-made set may hold in place of ``like``: another dtype (integers, bool, text, complex,
    objects, float64 or float16), another shape (flat, a scalar, empty, one row short, other spatial sides, Fortran
    order), values out of [0, 1], NaN or infinite, rows outside the eval set."""
    n = len(like)
    return st.sampled_from([
        like.astype(np.float64), like.astype(np.float16), like.astype(np.int64), like.astype(bool),
        np.array([None] * n, dtype=object), like.astype(np.complex64), np.array(["x"] * n), like.reshape(n, -1),
        like.reshape(-1), np.array(1.0), like[:0], like[:-1], np.full_like(like, np.nan, dtype=np.float32),
        np.full(like.shape, 2.0, np.float32), np.full(like.shape, -1, np.int64), np.full(like.shape, 10 ** 6),
        np.full(like.shape, np.inf, np.float32), np.asfortranarray(like.reshape(n, -1).T).T,
        np.zeros((n, 3, 5, 5), np.float32), np.full(like.shape, np.iinfo(np.int64).max)])


def set_changed(seed: dict):
    """The seed set with one array replaced by an odd one, deleted or added, or its metadata changed
    (fuzzkit.npz_changed)."""
    return npz_changed(seed["arrays"], odd_set_arrays, suffix="2")


def test_corruption_set_reader(corrupted):
    """What an audit calls on a bundle's sets before measuring (check_corruption_sets: each loaded and checked
    against the eval set beside it), then reads for the replay (CorruptionSet.load)."""
    ev = corrupted["eval"]

    def read(path):
        check_corruption_sets([path], corrupted["bundle"] / "eval.npz", ev)
        return CorruptionSet.load(path)

    @FUZZ
    @given(st.one_of(inputs(corrupted["bytes"]), set_changed(corrupted), set_changed(corrupted)))
    def run(data):
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / "gaussian_noise_s1.npz"
            path.write_bytes(data)
            expect_error(lambda: read(path), CorruptionSet, Path(d))

    run()


def test_corruption_set_through_an_audit(corrupted):
    """`audit` without `verify` (a user who skipped the hash check) of the bundle with its set changed: refused
    before measuring, or audited (an AuditReport), and nothing written outside the report folder."""
    from edgerobust.edge.audit import AuditConfig, AuditReport, audit
    from onnx_models import quick_profiles

    rel = corrupted["path"].relative_to(corrupted["bundle"])

    @examples(0.05)
    @given(st.one_of(inputs(corrupted["bytes"]), set_changed(corrupted)))
    def run(data):
        with tempfile.TemporaryDirectory() as d:
            bundle = shutil.copytree(corrupted["bundle"], Path(d) / "b")
            (bundle / rel).write_bytes(data)
            cfg = AuditConfig(model=bundle / "model.onnx", profile="laptop-cpu-1thread", verify=False,
                              measure_memory=False, show_progress=False, variants=False, out_dir=Path(d) / "out")
            expect_error(lambda: audit(cfg), AuditReport, Path(d), allowed=("out",))

    with pytest.MonkeyPatch.context() as mp:
        quick_profiles(mp)  # the audit's timings are not what is tested
        run()


# =============================================================================================
# the storage of `edgerobust optimize`, read back when a search resumes in its `out`


FIRST_RUNG = 33  # rows a fake trial reports before the pruner may stop it (its n_startup_steps: 32)


class FakeRunner:
    """Stands for the runner that builds points (LocalRunner, a Ray cluster): the stages below build nothing."""

    name = "a fake runner (this test)"


def fake_stages(mp: pytest.MonkeyPatch, rung: int = FIRST_RUNG) -> None:
    """The search's torch and onnxruntime stages replaced by quick stand-ins that write what the real ones write
    where the search reads it back (the base stage, a point's build, its derived model and scores, the reference's
    compress, the chosen bundle's compress and audit); the search itself, Optuna and its SQLite storage, the
    fingerprint, the records, the reference's cache, the choice and the outputs are the real ones. ``rung``: the
    rows a trial reports to the pruner (a few: it reads the best trial's, cheaply, without stopping this one)."""
    import edgerobust.workstation.compress as compress_mod
    from edgerobust.edge.scores.stats import proportion
    from edgerobust.research.optimize import choose, derive, search, trial
    from edgerobust.research.optimize import space as S

    def context(cfg, runner, cal):
        out = Path(cfg.out)
        shared = type("Shared", (), dict(prepare=cfg.prepare, model_sha256="0" * 64, data_digest="d", base_macs=1e6,
                                         corruptions=(), transfer={}))()
        lat = {"kind": "measured", "p50_ms": 1.0, "low_ms": None, "high_ms": None}
        return trial.Context(cfg=cfg, out=out, shared=shared, ev=None, base=None, base_latency=lat,
                             base_clean=proportion(90, 100), base_robust=proportion(50, 100),
                             budget_ms=cfg.latency_budget(1.0), runner=runner, device="cpu",
                             plan=type("Plan", (), dict(runtime="cpu", int8_target=None, stem=None))(),
                             precisions=("int8", "fp32"))

    def build(ctx, p):
        rel = f"points/{hashlib.sha256(S.label(p).encode()).hexdigest()[:16]}.onnx"
        (ctx.out / rel).parent.mkdir(parents=True, exist_ok=True)
        (ctx.out / rel).write_bytes(b"fp32")
        return {"models": [{"path": rel, "macs": 1e6 * (1 - p["sparsity"]) ** 2, "macs_reduction": 2.0}]}, False

    def measure(ctx, rec, path, halt=None, fp16_agreement=None, reference=False):
        s = (rec.get("params") or {}).get("sparsity", 0.5)
        rows = np.arange(rung)  # the first rung's rows, reported to the pruner (WilcoxonPruner) as the real one
        ok = np.random.default_rng(int(1000 * s)).random(rung) < 0.9 - 0.5 * s
        stop = halt(rows, ok) if halt is not None else None
        rec.update(clean=proportion(int(100 * (0.95 - 0.2 * s)), 100), robust=proportion(int(ok.sum()), rung),
                   robust_n=rung, halved=stop, corruption=None,
                   latency={"kind": "measured", "p50_ms": (1 - s) ** 2, "low_ms": None, "high_ms": None})
        rec["clean_drop"] = 100 * (ctx.base_clean.value - rec["clean"].value)
        return trial.judge(ctx, rec)

    def compress(cfg):  # the reference's bundle: compress at sparsity 0.5 with int8
        Path(cfg.out).mkdir(parents=True, exist_ok=True)
        (Path(cfg.out) / "model.onnx").write_bytes(b"reference")
        (Path(cfg.out) / "manifest.json").write_text(json.dumps({"metrics": {"macs_after": 2.5e5},
                                                                 "deployment": {"variant": "int8"}}))

    def chosen(ctx, rec, out):
        out.mkdir(parents=True)
        (out / "model.onnx").write_bytes(b"chosen")

    mp.setattr(search, "_context", context)
    mp.setattr(trial, "build", build)
    mp.setattr(trial, "measure", measure)
    mp.setattr(derive, "derive", lambda ctx, rel, p: {"path": rel, "fp16_agreement": None})
    mp.setattr(compress_mod, "compress", compress)
    mp.setattr(choose, "_compress", chosen)
    mp.setattr(choose, "_audit", lambda ctx, bundle: {"kind": "measured", "p50_ms": 0.2, "check_ms": 0.2,
                                                      "robust": {}, "speedup": None, "host_matches": True})
    mp.setattr(choose, "score", lambda ctx, path: (proportion(90, 100), proportion(50, 100), None))


def _search_cfg(out: Path, trials: int):
    from edgerobust.research.optimize.configs import OptimizeConfig
    from edgerobust.workstation.attacks.spec import make_specs

    return OptimizeConfig("m.pt", out=out, profile="laptop-cpu-1thread", attacks=make_specs("fgsm", "8/255"),
                          trials=trials, max_latency_ms=0.5, max_clean_drop=10.0)


TRIALS = 3


@pytest.fixture(scope="module")
def search_seed(tmp_path_factory):
    """A finished search of TRIALS trials (study.db, reference/, best/, pareto.json, report.html) by the real
    search with the stages faked (fake_stages), and the SQLite rows and JSON files the fuzzer changes."""
    import sqlite3

    from edgerobust.research.optimize.search import optimize

    out = tmp_path_factory.mktemp("search") / "opt"
    with pytest.MonkeyPatch.context() as mp:
        fake_stages(mp, FIRST_RUNG)  # every trial reports a full first rung: the pruner's rows, stored
        result = optimize(_search_cfg(out, TRIALS), runner=FakeRunner())
    assert result.ran == TRIALS and (out / "best").is_dir()
    db = sqlite3.connect(out / "study.db")
    tables = {t: [c[1] for c in db.execute(f"PRAGMA table_info({t})")]
              for (t,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    rows = [(t, c, r) for t, cols in tables.items() for (r,) in db.execute(f"SELECT rowid FROM {t}") for c in cols]
    attrs = [(t, r, json.loads(v)) for t in ("study_user_attributes", "trial_user_attributes", "trial_system_attributes")
             for r, v in db.execute(f"SELECT rowid, value_json FROM {t}")]
    db.close()
    files = {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    return {"out": out, "files": files, "rows": rows, "attrs": attrs}


ODD_SQL = (st.none() | st.integers(-2 ** 63, 2 ** 63 - 1) | st.floats() | st.text(max_size=12) | st.binary(max_size=12)
           | odd_values().map(json.dumps))


@st.composite
def storage_change(draw, seed: dict):
    """One change to a finished search's folder: study.db's bytes mutated, or one cell of any of its tables set to an
    odd value (SQLite keeps any type in any column), or a row deleted, or a JSON attribute (the settings' fingerprint,
    a trial's record, its constraints) changed structurally; or the folder's marker, the reference's record or its
    bundle's manifest changed (bytes or structure). Returns (what, apply(out))."""
    import sqlite3

    def sql(statement, *args):
        def apply(out):
            db = sqlite3.connect(out / "study.db")
            try:
                with db:
                    db.execute(statement, args)
            except sqlite3.IntegrityError:  # a key SQLite itself keeps an integer: left as it was
                pass
            db.close()
        return apply

    kind = draw(st.sampled_from(["bytes", "cell", "cell", "delete", "attr", "attr", "attr", "file"]))
    if kind == "bytes":
        data = draw(inputs(seed["files"]["study.db"]))
        return "study.db's bytes", lambda out: (out / "study.db").write_bytes(data)
    if kind in ("cell", "delete"):
        table, column, rowid = draw(st.sampled_from(seed["rows"]))
        if kind == "delete":
            return f"{table} row {rowid} deleted", sql(f"DELETE FROM {table} WHERE rowid = ?", rowid)
        value = draw(ODD_SQL)
        return f"{table}.{column} of row {rowid} = {value!r:.60}", sql(f"UPDATE {table} SET {column} = ? WHERE rowid = ?",
                                                                        value, rowid)
    if kind == "attr":
        table, rowid, doc = draw(st.sampled_from(seed["attrs"]))
        new = draw(replaced_deep(doc) if isinstance(doc, (dict, list)) and doc else odd_values())
        return f"{table} row {rowid} = {json.dumps(new):.80}", sql(f"UPDATE {table} SET value_json = ? WHERE rowid = ?",
                                                                   json.dumps(new), rowid)
    rel = draw(st.sampled_from([".edgerobust-study", "reference/reference.json", "reference/bundle/manifest.json"]))
    data = draw(st.one_of(inputs(seed["files"][rel]), replaced_deep(json.loads(seed["files"][rel])).map(
        lambda d: json.dumps(d).encode())))
    return rel, lambda out: (out / rel).write_bytes(data)


def resume(seed: dict, change, trials: int, rung: int = 3):
    """Copy the finished search, plant a file of the user's in its `out`, apply ``change``, and run the search again
    in it (``trials`` in all): a result or one EdgeRobustError, nothing written outside `out`, the user's file kept,
    and no file the folder held lost (save best/, which a run that chooses nothing removes, and says so)."""
    from edgerobust.research.optimize.search import OptimizeResult, optimize

    what, apply = change
    with tempfile.TemporaryDirectory() as d:
        out = shutil.copytree(seed["out"], Path(d) / "opt")
        (out / "notes.txt").write_text("the user's own notes")
        apply(out)
        before = files_under(out)
        with pytest.MonkeyPatch.context() as mp:
            fake_stages(mp, rung)
            expect_error(lambda: optimize(_search_cfg(out, trials), runner=FakeRunner()), OptimizeResult, Path(d),
                         allowed=("opt",))
        assert (out / "notes.txt").read_text() == "the user's own notes", what
        lost = {p for p in before - files_under(out) if not p.startswith("best")}
        assert not lost, f"{what}: lost {sorted(lost)[:5]}"


def test_search_resumes_from_its_storage(search_seed):
    """The same search run again in its `out` (nothing left to run): what it reads back is the storage."""
    @examples(0.1)
    @given(storage_change(search_seed))
    def run(change):
        resume(search_seed, change, TRIALS)

    run()


def test_search_runs_more_trials_on_its_storage(search_seed):
    """The search run again with one trial more: Optuna's sampler and pruner read every stored trial too."""
    @examples(0.05)
    @given(storage_change(search_seed))
    def run(change):
        resume(search_seed, change, TRIALS + 1)

    run()


# Found by fuzzing


def _rerun(seed: dict, tmp_path: Path, statement: str | None = None, *args, trials: int = TRIALS, files=None):
    """The finished search copied to ``tmp_path``, one SQL statement run on its study.db (and ``files`` written),
    then the search run again in it."""
    import sqlite3

    from edgerobust.research.optimize.search import optimize

    out = shutil.copytree(seed["out"], tmp_path / "opt")
    if statement is not None:
        with sqlite3.connect(out / "study.db") as db:
            db.execute(statement, args)
        db.close()
    for rel, data in (files or {}).items():
        (out / rel).write_bytes(data)
    with pytest.MonkeyPatch.context() as mp:
        fake_stages(mp, 3)
        return out, optimize(_search_cfg(out, trials), runner=FakeRunner())


def test_found_study_db_that_is_no_database_is_one_error_and_kept(search_seed, tmp_path):
    from edgerobust.errors import UsageError

    with pytest.raises(UsageError, match=r"cannot be read back: DatabaseError") as err:  # sqlalchemy's DatabaseError
        _rerun(search_seed, tmp_path, files={"study.db": b"not a database" * 100})
    assert "another `out`" in err.value.fix and (tmp_path / "opt" / "study.db").read_bytes() == b"not a database" * 100


@pytest.mark.parametrize("statement, args, words", [
    ("UPDATE trial_user_attributes SET value_json = json_set(value_json, '$.config', json('[1]')) WHERE key = 'record'",
     (), "trial 0's record.config is not"),  # AttributeError in the report's html.escape
    ("UPDATE trial_user_attributes SET value_json = json_remove(value_json, '$.clean.ci_high') WHERE key = 'record'",
     (), "record.clean.ci_high is not"),  # KeyError in the report's percentages
    ("UPDATE trial_system_attributes SET value_json = '{}' WHERE key = 'constraints:budget'", (),
     "trial 0 holds constraints that are not numbers"),  # TypeError in Optuna's TPE sampler
    ("UPDATE trial_intermediate_values SET step = ? WHERE rowid = 1", (b"\x9a\x80",),
     "trial 0 holds first-rung outcomes"),  # TypeError in Optuna's WilcoxonPruner
    ("DELETE FROM trial_values WHERE rowid = 1", (), "trial 0 holds no single objective value"),  # TypeError in the TPE sampler
    ("UPDATE study_user_attributes SET value_json = '[1]' WHERE key = 'edgerobust.settings'", (),
     "its record of the settings"),  # AttributeError comparing the fingerprints
    ("UPDATE trial_user_attributes SET value_json = json_remove(value_json, '$.latency.kind') WHERE key = 'record'",
     (), "record.latency.kind is not"),  # KeyError in the report's chart
    ("UPDATE trial_system_attributes SET key = NULL WHERE rowid = 1", (), "AttributeError"),  # in Optuna's constraints
    ("UPDATE studies SET study_id = 0", (), "no single objective"),  # IndexError in Optuna's best_trial
    ("UPDATE trial_params SET distribution_json = (SELECT distribution_json FROM trial_params WHERE param_name = 'mode' "
     "LIMIT 1), param_value = 0 WHERE param_name = 'sparsity' AND trial_id = 1", (),
     "a parameter 'sparsity' unlike"),  # ValueError in Optuna's TPE sampler: 'standard' is no float
], ids=["record-config-list", "record-without-ci-high", "constraint-object", "rung-step-bytes", "no-objective-value",
        "fingerprint-list", "record-latency-without-kind", "constraint-key-null", "study-id-changed",
        "parameter-of-another-kind"])
def test_found_damaged_study_is_one_error_before_any_trial_runs(search_seed, tmp_path, statement, args, words):
    from edgerobust.errors import UsageError

    with pytest.raises(UsageError, match="cannot be read back") as err:
        _rerun(search_seed, tmp_path, statement, *args, trials=TRIALS + 1)
    assert words in err.value.what, err.value.what


def test_found_study_db_with_a_damaged_page_is_one_error_before_any_trial_runs(search_seed, tmp_path):
    """A page of study.db overwritten: Optuna loaded the study, and a trial's first write failed (StorageInternalError:
    database disk image is malformed); SQLite's integrity check finds it first."""
    from edgerobust.errors import UsageError

    data = bytearray(search_seed["files"]["study.db"])
    data[3 * 4096 + 8:3 * 4096 + 24] = b"\xff" * 16
    with pytest.raises(UsageError, match="cannot be read back"):
        _rerun(search_seed, tmp_path, trials=TRIALS + 1, files={"study.db": bytes(data)})


@pytest.mark.parametrize("manifest", [b"\xf8 not json", b"[]", b'{"deployment": []}'],
                         ids=["not-utf8", "a-list", "deployment-list"])  # UnicodeDecodeError, AttributeError
def test_found_reference_bundle_with_a_damaged_manifest_is_built_again(search_seed, tmp_path, manifest):
    from edgerobust.research.optimize.search import OptimizeResult

    out, result = _rerun(search_seed, tmp_path, files={"reference/bundle/manifest.json": manifest})
    assert isinstance(result, OptimizeResult) and result.reference["config"].startswith("s=0.5 int8")
    assert json.loads((out / "reference" / "bundle" / "manifest.json").read_text())["deployment"]["variant"] == "int8"
