"""Your own data, honestly: the evaluation rows are held out of the model's training where the user
says which rows those are (npz x_train/x_test, train/ and test/ folders, a separate eval file),
and where nothing says so the output and the manifest say the eval may overlap training data."""
import json

import numpy as np
import pytest

from edgerobust.errors import DataError
from edgerobust.workstation.data.sources import load_data, split


def _rows(n, seed=0, size=8):
    rng = np.random.default_rng(seed)
    return rng.random((n, 1, size, size), dtype=np.float32), (np.arange(n) % 4).astype(np.int64)


def _marked(n, start):
    """Images whose first pixel is a row id: which rows landed where can be read back."""
    x, y = _rows(n)
    x[:, 0, 0, 0] = (np.arange(start, start + n) / 1000.0).astype(np.float32)
    return x, y


def _ids(ds):
    return set(np.round(ds.x[:, 0, 0, 0] * 1000).astype(int).tolist())


def test_npz_x_train_x_test_evaluates_on_the_test_rows_only(tmp_path):
    xtr, ytr = _marked(300, 0)
    xte, yte = _marked(60, 500)
    np.savez(tmp_path / "d.npz", x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)
    sp = split(load_data(f"npz:{tmp_path / 'd.npz'}"), seed=3, eval_samples=1000)
    assert _ids(sp.eval) == set(range(500, 560))  # every test row, and nothing else
    assert not (_ids(sp.train) | _ids(sp.val) | _ids(sp.calib)) & set(range(500, 560))
    assert len(sp.train) + len(sp.val) == 300
    assert sp.held_out.source == "test" and not sp.held_out.may_overlap_training
    assert "x_test" in sp.held_out.why


def test_npz_val_rows_are_the_validation_split_and_x_val_alone_is_the_eval(tmp_path):
    xtr, ytr = _marked(200, 0)
    xva, yva = _marked(30, 300)
    xte, yte = _marked(40, 400)
    np.savez(tmp_path / "three.npz", x_train=xtr, y_train=ytr, x_val=xva, y_val=yva, x_test=xte, y_test=yte)
    sp = split(load_data(f"npz:{tmp_path / 'three.npz'}"))
    assert _ids(sp.val) == set(range(300, 330)) and _ids(sp.eval) == set(range(400, 440))
    assert _ids(sp.train) == set(range(200))
    np.savez(tmp_path / "two.npz", x_train=xtr, y_train=ytr, x_val=xva, y_val=yva)
    sp = split(load_data(f"npz:{tmp_path / 'two.npz'}"))
    assert _ids(sp.eval) == set(range(300, 330)) and "x_val" in sp.held_out.why
    assert not sp.held_out.may_overlap_training


def test_one_array_says_the_eval_may_overlap(tmp_path):
    x, y = _rows(200)
    np.savez(tmp_path / "all.npz", x=x, y=y)
    sp = split(load_data(f"npz:{tmp_path / 'all.npz'}"))
    assert sp.held_out.source == "random" and sp.held_out.may_overlap_training
    assert len(sp.eval) == 40


@pytest.mark.parametrize("arrays, message", [
    ({"x": 0, "y": 0, "x_test": 0, "y_test": 0}, "both x/y and split arrays"),
    ({"x_test": 0, "y_test": 0}, "no x_train"),
    ({"x_train": 0, "y_train": 0, "x_test": 0}, "only one of x_test and y_test"),
])
def test_npz_split_layouts_that_cannot_be_read_are_refused(tmp_path, arrays, message):
    x, y = _rows(20)
    np.savez(tmp_path / "bad.npz", **{k: (x if k.startswith("x") else y) for k in arrays})
    with pytest.raises(DataError, match=message):
        load_data(f"npz:{tmp_path / 'bad.npz'}")


def _image_tree(root, split_counts):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split_name, n in split_counts.items():
        for c in ("cat", "dog"):
            d = root / split_name / c
            d.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(d / f"{i}.png")


def test_folder_with_train_and_test_subfolders(tmp_path):
    _image_tree(tmp_path, {"train": 20, "test": 5, "val": 3})
    ds = load_data(f"folder:{tmp_path}")
    assert ds.class_names == ["cat", "dog"] and len(ds) == 40 and len(ds.test) == 10 and len(ds.val) == 6
    sp = split(ds)
    assert len(sp.eval) == 10 and len(sp.val) == 6 and len(sp.train) == 40
    assert sp.held_out.source == "test" and "test/" in sp.held_out.why


def test_folder_test_split_with_a_class_train_lacks_is_refused(tmp_path):
    _image_tree(tmp_path, {"train": 3, "test": 2})
    (tmp_path / "test" / "bird").mkdir()
    with pytest.raises(DataError, match="class folders the training folder lacks: bird"):
        load_data(f"folder:{tmp_path}")


def test_eval_data_replaces_the_random_split(tmp_path):
    x, y = _marked(200, 0)
    xe, ye = _marked(30, 700)
    np.savez(tmp_path / "train.npz", x=x, y=y)
    np.savez(tmp_path / "eval.npz", x=xe, y=ye)
    sp = split(load_data(f"npz:{tmp_path / 'train.npz'}"), eval_ds=load_data(f"npz:{tmp_path / 'eval.npz'}"))
    assert _ids(sp.eval) == set(range(700, 730)) and len(sp.train) + len(sp.val) == 200
    assert sp.held_out.source == "eval_data" and not sp.held_out.may_overlap_training


def _digits_npz(tmp_path):
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]
    rng = np.random.default_rng(1)
    p = rng.permutation(len(x))
    tr, te = p[:1400], p[1400:]
    np.savez(tmp_path / "all.npz", x=x, y=d.target)
    np.savez(tmp_path / "split.npz", x_train=x[tr], y_train=d.target[tr], x_test=x[te], y_test=d.target[te])
    return te


def test_compress_records_where_the_eval_rows_came_from(tmp_path, zoo_checkpoint, quick_measure):
    """The issue's case: a user's npz. One array: said in the output, the manifest and the audit's
    headline. x_train/x_test: the eval is exactly the test rows, and nothing is said."""
    from typer.testing import CliRunner

    from edgerobust.cli import app
    from edgerobust.edge.audit import AuditConfig, audit
    from edgerobust.edge.render.headline import headline

    te = _digits_npz(tmp_path)
    common = ["compress", str(zoo_checkpoint.path), "--image-size", "16", "--finetune-epochs", "0",
              "--max-prune-drop", "100", "--attacks", "none", "--eval-samples", "2000"]
    r = CliRunner().invoke(app, common + ["--data", f"npz:{tmp_path / 'all.npz'}", "--out", str(tmp_path / "a"),
                                          "--allow-weak-base"], env={"COLUMNS": "300"})
    assert r.exit_code == 0, r.output
    assert "may overlap the model's training data" in r.output and "--eval-data" in r.output
    man = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert man["eval_split"]["may_overlap_training"] is True and man["eval_split"]["source"] == "random"
    assert any("may overlap" in w for w in man["warnings"])
    rep = audit(AuditConfig(model=tmp_path / "a" / "model.onnx", profile="laptop-cpu-1thread", measure_memory=False,
                            show_progress=False, variants=False))
    assert "upper bounds: the evaluation rows may overlap" in headline(rep)

    r = CliRunner().invoke(app, common + ["--data", f"npz:{tmp_path / 'split.npz'}", "--out", str(tmp_path / "b"),
                                          "--allow-weak-base"], env={"COLUMNS": "300"})
    assert r.exit_code == 0, r.output
    assert "may overlap" not in r.output
    man = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert man["eval_split"] == {"source": "test", "may_overlap_training": False,
                                 "why": "the evaluation rows are the source's own held-out x_test"}
    ev = np.load(tmp_path / "b" / "eval.npz")
    assert len(ev["y"]) == len(te)
    rep = audit(AuditConfig(model=tmp_path / "b" / "model.onnx", profile="laptop-cpu-1thread", measure_memory=False,
                            show_progress=False, variants=False))
    assert "may overlap" not in headline(rep) and not any("may overlap" in w for w in rep.warnings)


def test_a_zoo_model_on_its_own_seeded_split_is_held_out(zoo_checkpoint, quick_measure):
    """edgerobust's own checkpoints record the split they trained on: no warning on that split,
    the warning on another seed (whose eval rows the model did train on)."""
    from edgerobust.workstation.configs import PrepareConfig
    from edgerobust.workstation.pipeline.prepare import prepare

    same = prepare(PrepareConfig(zoo_checkpoint.path, eval_samples=50))
    assert not same.held_out.may_overlap_training and "checkpoint records training" in same.held_out.why
    other = prepare(PrepareConfig(zoo_checkpoint.path, eval_samples=50, seed=1, allow_weak_base=True))
    assert other.held_out.may_overlap_training
    assert any("may overlap" in w for w in other.warnings)
