"""The sweep end to end on a tiny grid, its JSON against its plots, and the self-contained page."""
import base64
import dataclasses
import json
import re

import pytest

from edgerobust.errors import UsageError

pytest.importorskip("matplotlib")


@pytest.fixture(scope="module")
def tiny_sweep(zoo_checkpoint, tmp_path_factory):
    """2 sparsities x fp32/int8 x fgsm x 2 eps, transfer and white-box, one corruption set, 64 samples, no
    fine-tuning."""
    from edgerobust.research.sweep import sweep
    from edgerobust.research.configs import SweepConfig
    from edgerobust.workstation.configs import PrepareConfig, TrainConfig

    cfg = SweepConfig(PrepareConfig(zoo_checkpoint.path, eval_samples=64), out=tmp_path_factory.mktemp("sweep") / "s",
                      sparsities=(0.3, 0.5), attacks="fgsm", eps="2/255,8/255", threats=("transfer", "whitebox"),
                      finetune=TrainConfig(epochs=0), latency_rounds=2, corruptions="gaussian_noise",
                      corruption_severities=(3,))
    return cfg, sweep(cfg)


def _doc(cfg):
    doc = json.loads((cfg.out / "sweep.json").read_text())
    assert doc["_type"] == "edgerobust.research.sweep" and doc["_version"] == 1
    return doc["_data"]


@pytest.mark.slow
def test_sweep_models_and_sets(tiny_sweep):
    cfg, r = tiny_sweep
    names = [m.model for m in r.models]
    assert names == ["base", "s=0.3 fp32", "s=0.3 int8", "s=0.5 fp32", "s=0.5 int8"]
    base = r.models[0]
    assert base.speedup == pytest.approx(1.0) and base.macs_reduction == 1.0
    pruned = {m.model: m for m in r.models[1:]}
    assert pruned["s=0.5 fp32"].macs < pruned["s=0.3 fp32"].macs < base.macs
    assert pruned["s=0.5 fp32"].macs == pruned["s=0.5 int8"].macs  # one bundle, one pruned model
    assert all(m.speedup > 0 and m.latency_p50_ms > 0 for m in r.models)
    # every model x threat x attack x eps, scored on the same 64 samples; and x (the corruption set + pooled)
    assert len(r.sets) == 5 * 2 * 1 * 2 + 5 * 2
    assert {s.accuracy.n for s in r.sets} == {64} and r.n_eval == 64
    # the transfer sets were crafted once, on the base: one file per attack x eps
    assert sorted(p.name for p in (cfg.out / "adv").iterdir()) == ["fgsm_2-255.npz", "fgsm_8-255.npz"]
    assert {s.set for s in r.sets if s.threat == "transfer"} == {"adv/fgsm_2-255.npz", "adv/fgsm_8-255.npz"}
    # white-box sets are crafted per pruned model and shared by its int8 version; the base's is the transfer set
    wb = {(s.model, s.set) for s in r.sets if s.threat == "whitebox" and s.eps_text == "8/255"}
    assert ("base", "adv/fgsm_8-255.npz") in wb
    wb5 = {s for m, s in wb if m.startswith("s=0.5")}
    assert len(wb5) == 1 and re.fullmatch(r"points/s_0\.5-[0-9a-f]{16}/whitebox/fgsm_8-255\.npz", wb5.pop())
    assert {m for m, _ in wb} == {"base", "s=0.3 fp32", "s=0.3 int8", "s=0.5 fp32", "s=0.5 int8"}
    # one point per sparsity, content-addressed, its bundle holding both precisions
    folders = sorted(p.name for p in (cfg.out / "points").iterdir())
    assert [f.split("-")[0] for f in folders] == ["s_0.3", "s_0.5"]
    assert (cfg.out / "points" / folders[1] / "bundle" / "model_fp32.onnx").is_file()
    assert {m.path for m in r.models[3:]} == {f"points/{folders[1]}/bundle/model_fp32.onnx",
                                             f"points/{folders[1]}/bundle/model.onnx"}
    assert r.runner == "local" and (r.computed, r.reused) == (2, 0)


@pytest.mark.slow
def test_onnx_scores_match_the_crafting_model(tiny_sweep):
    """The base's robust accuracy measured with ONNX Runtime agrees with torch's at crafting time."""
    from edgerobust.edge.files.bundle import AdvSet

    cfg, r = tiny_sweep
    for s in r.sets:
        if s.model == "base" and s.threat == "transfer":
            meta = AdvSet.load(cfg.out / s.set).meta
            assert abs(s.accuracy.value - meta["base_adv_accuracy"]) <= 2 / 64
    clean = r.models[0].clean
    assert 0.5 < clean.value <= 1.0 and clean.ci_low <= clean.value <= clean.ci_high


@pytest.mark.slow
def test_json_holds_every_plotted_point(tiny_sweep):
    cfg, r = tiny_sweep
    data = _doc(cfg)
    points = {p["model"] + "|" + p["threat"] + "|" + p["attack"] + "|" + p["eps_text"]: p for p in data["points"]}
    # 5 models x (clean + 2 threats x 1 attack x 2 eps + the corruption set + pooled)
    assert len(points) == len(data["points"]) == 5 * (1 + 2 * 2 + 2)
    assert len(data["runs"]) == 1 and len(data["runs"][0]["sets"]) == len(r.sets)
    files = {p["file"] for p in data["plots"]}
    assert files == {f"{k}_{t}.png" for k in ("acc_vs_eps", "robust_vs_macs", "robust_vs_speedup")
                     for t in ("transfer", "whitebox")} | {"acc_vs_severity_corruption.png", "corruption_vs_speedup.png"}
    counts = {p["file"]: len(p["points"]) for p in data["plots"]}
    # accuracy vs eps: every model, clean + 2 eps, one attack panel
    assert counts["acc_vs_eps_transfer.png"] == 5 * 3
    # robust vs speedup: every model once, at the focus eps
    assert counts["robust_vs_speedup_whitebox.png"] == 5
    assert counts["acc_vs_severity_corruption.png"] == 5 * 2 and counts["corruption_vs_speedup.png"] == 5
    # robust vs realized MACs reduction, panels clean + fgsm: fp32 line (base, 0.3, 0.5) + int8 line (0.3, 0.5)
    # + base star
    assert counts["robust_vs_macs_transfer.png"] == 2 * (3 + 2 + 1)
    for plot in data["plots"]:
        for d in plot["points"]:
            p = points[d["key"]]  # every drawn point is in the JSON...
            assert d["y"] == pytest.approx(100 * p["accuracy"])  # ...with the value drawn
            if plot["file"].startswith(("robust_vs_speedup", "corruption_vs_speedup")):
                assert d["x"] == pytest.approx(p["speedup"])
                assert p["eps_text"] == ("mean" if plot["file"].startswith("corruption") else "8/255")
            elif plot["file"].startswith("robust_vs_macs"):  # the realized figure, not the requested sparsity
                assert d["x"] == pytest.approx(p["macs_reduction"])
                assert (p["macs_reduction"] > 1.5) == (p["sparsity"] > 0)
            else:
                assert d["x"] == pytest.approx(p["eps"])
    assert data["config"]["focus_eps"] == "8/255"
    assert len(data["findings"]) == 3 and all("FGSM 8/255" in f for f in data["findings"][:2])
    assert data["findings"][2].startswith("Common corruptions (accuracy pooled over 1 sets)")
    assert all(re.search(r"s=0\.[35] (fp32|int8) \(\d+\.\dx fewer MACs\)", f) for f in data["findings"])


@pytest.mark.slow
def test_pngs_are_valid_images(tiny_sweep):
    from PIL import Image

    cfg, _ = tiny_sweep
    pngs = sorted(cfg.out.glob("*.png"))
    assert len(pngs) == 8
    for p in pngs:
        with Image.open(p) as im:
            im.verify()
        with Image.open(p) as im:
            assert im.format == "PNG" and im.size[0] > 600 and im.size[1] > 300


@pytest.mark.slow
def test_html_is_self_contained(tiny_sweep):
    cfg, r = tiny_sweep
    page = (cfg.out / "report.html").read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.I)
    assert "http://" not in page and "https://" not in page and "<script" not in page.lower()
    srcs = re.findall(r"""<img[^>]*\ssrc="([^"]+)\"""", page)
    assert len(srcs) == 8
    for s in srcs:
        assert s.startswith("data:image/png;base64,")
        assert base64.b64decode(s.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    for f in _doc(cfg)["findings"]:  # the finding sentences and the table are on the page
        assert f.replace("'", "&#x27;") in page
    assert page.count("<tr>") == 1 + 5 * 7


@pytest.mark.slow
def test_corruption_axis_as_onnxruntime_scores_it(tiny_sweep):
    """The corruption set is the eval rows under gaussian noise at severity 3; every model's accuracy on it,
    and the pooled figure, are what a plain onnxruntime session gives on that file."""
    import numpy as np
    import onnxruntime as ort

    cfg, r = tiny_sweep
    assert sorted(p.name for p in (cfg.out / "corruptions").iterdir()) == ["gaussian_noise_s3.npz"]
    with np.load(cfg.out / "corruptions" / "gaussian_noise_s3.npz", allow_pickle=False) as z:
        x, y = z["x"], z["y"]
    assert x.shape[0] == 64 and r.corruption["names"] == ["gaussian_noise"] and r.corruption["severities"] == [3]
    paths = {m.model: m.path for m in r.models}
    for model, rel in paths.items():
        s = ort.InferenceSession(str(cfg.out / rel), providers=["CPUExecutionProvider"])
        pred = np.argmax(s.run(None, {s.get_inputs()[0].name: x})[0], axis=1)
        mine = {sc.threat: sc for sc in r.sets if sc.model == model and sc.threat.startswith("corruption")}
        assert mine["corruption"].attack == "gaussian_noise" and mine["corruption"].eps_text == "s3"
        assert mine["corruption"].accuracy.k == int(np.sum(pred == y))
        pooled = mine["corruption-mean"].accuracy  # one set: pooled = that set, but no interval (rows repeat)
        assert (pooled.k, pooled.n) == (int(np.sum(pred == y)), 64) and pooled.ci_low is None
        assert "pooled over 1 corruption sets" in pooled.method


def test_pareto_front():
    from edgerobust.research.plots import pareto_front

    pts = [(1.0, 90.0), (2.0, 85.0), (1.5, 80.0), (3.0, 20.0), (2.5, 85.0)]
    assert pareto_front(pts) == [0, 4, 3]


@pytest.mark.slow
def test_summarize_over_seeds(tiny_sweep):
    from edgerobust.edge.scores.stats import proportion
    from edgerobust.research.points import find, summarize

    _, r = tiny_sweep
    other = dataclasses.replace(r, seed=1, models=tuple(
        dataclasses.replace(m, clean=proportion(m.clean.k - 2, m.clean.n), speedup=m.speedup + 1.0)
        for m in r.models))
    pts = summarize([r, other])
    base = find(pts, model="base", threat="clean")[0]
    one, two = r.models[0].clean.value, (r.models[0].clean.k - 2) / 64
    assert base.seeds == 2 and base.accuracy == pytest.approx((one + two) / 2)
    assert base.accuracy_std == pytest.approx(abs(one - two) / 2 ** 0.5)
    assert base.speedup_std == pytest.approx(1 / 2 ** 0.5) and base.ci_low is None


@pytest.mark.parametrize("kwargs, match", [
    ({"precisions": ("fp16",)}, "`precisions`"),
    ({"sparsities": (1.0,)}, "sparsity"),
    ({"sparsities": (0.5, 0.5)}, "more than once"),
    ({"threats": ("grey",)}, "`threats`"),
    ({"focus_eps": "4/255"}, "`focus_eps`"),
    ({"attacks": "nope"}, "Unknown attack"),
    ({"sparsities": (0.0,), "precisions": ("fp32",)}, "compare nothing"),
    ({"latency_rounds": 0}, "`latency_rounds` must be an integer >= 1"),
], ids=["precision", "sparsity-1", "dupe", "threat", "focus", "attack", "nothing", "rounds"])
def test_bad_config_is_a_usage_error(kwargs, match, tmp_path):
    from edgerobust.research.configs import SweepConfig

    with pytest.raises(UsageError, match=match):
        SweepConfig("m.pt", out=tmp_path / "o", eps="2/255,8/255", **kwargs)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("prep, match", [
    ({"eval_samples": 0}, "`eval_samples` must be an integer >= 1"),
    ({"seed": -1}, "`seed` must be an integer >= 0"),
    ({"device": "gpu"}, "Unknown `device` 'gpu'"),
    ({"model": None}, "No `model` to sweep"),
], ids=["eval", "seed", "device", "no-model"])
def test_bad_prepare_config_is_a_usage_error(prep, match, tmp_path):
    from edgerobust.research.configs import SweepConfig
    from edgerobust.workstation.configs import PrepareConfig

    with pytest.raises(UsageError, match=match):
        SweepConfig(PrepareConfig(**{"model": "m.pt", **prep}), out=tmp_path / "o")


def test_sweep_config_embeds_the_prepare_config():
    from edgerobust.research.configs import SweepConfig
    from edgerobust.workstation.configs import PrepareConfig

    cfg = SweepConfig(PrepareConfig("m.pt", seed=3), out="o")
    assert cfg.seed == 3 and {s.seed for s in cfg.specs} == {3}
    assert SweepConfig("m.pt", out="o").prepare == PrepareConfig("m.pt")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.seed = 4


def test_no_import_cycle_between_plots_and_sweep():
    """points holds what plots and sweep both read; plots does not import sweep."""
    import ast
    import inspect

    import edgerobust.research.plots as plots
    import edgerobust.research.points as points

    for mod in (plots, points):
        tree = ast.parse(inspect.getsource(mod))
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert "sweep" not in imported and "recipes" not in imported


def test_sweep_flags_share_the_vocabulary():
    from typer.testing import CliRunner

    from edgerobust.cli import app
    from edgerobust.cli.research import SWEEP_PROFILE
    from edgerobust.defaults import DEFAULT_CRITERION, DEFAULT_EVAL_SAMPLES
    from edgerobust.research.configs import SWEEP_PROFILE as LIB_PROFILE, SweepConfig

    assert SWEEP_PROFILE == LIB_PROFILE
    cfg = SweepConfig("m.pt", out="o")
    assert cfg.prune.criterion == DEFAULT_CRITERION and cfg.prepare.eval_samples == DEFAULT_EVAL_SAMPLES
    assert cfg.latency_profile == LIB_PROFILE
    res = CliRunner().invoke(app, ["sweep", "--help"], env={"COLUMNS": "200"})
    text = " ".join(res.output.split())
    for flag in ("--num-classes", "--normalize", "--allow-weak-base", "--json", "--profile", "-p",
                 "--attack-steps", "--eval-samples", "--ray", "--ray-address", "--fresh", "EDGEROBUST_PROFILE"):
        assert flag in text, flag
    assert "one CPU thread at batch 1" in text


def test_cli_sweep_refuses_existing_out(tmp_path, zoo_checkpoint):
    from typer.testing import CliRunner

    from edgerobust.cli import app

    (tmp_path / "o").mkdir()
    res = CliRunner().invoke(app, ["sweep", str(zoo_checkpoint.path), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "already exists" in " ".join(res.output.split())
    res = CliRunner().invoke(app, ["sweep", str(zoo_checkpoint.path), "--out", str(tmp_path / "p"),
                                   "--precisions", "fp16"])
    assert res.exit_code == 2 and "precision" in " ".join(res.output.split())
    res = CliRunner().invoke(app, ["sweep", str(zoo_checkpoint.path), "--out", str(tmp_path / "p"),
                                   "--sparsities", "0.5,,0.7"])
    assert res.exit_code == 2 and "empty entry" in " ".join(res.output.split())
