"""The Python API named in the README: `edgerobust.compress(...)` and `edgerobust.audit(...)`."""
import importlib

import edgerobust


def test_package_import_stays_torch_free():
    import subprocess
    import sys

    code = "import edgerobust, sys; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_configs_and_the_target_plan_are_torch_free():
    import subprocess
    import sys

    code = ("import edgerobust as e, sys; e.CompressConfig(e.PrepareConfig('m.pt'), prune=e.PruneConfig(), "
            "finetune=e.TrainConfig(), quant=e.QuantConfig()); e.SweepConfig('m.pt', out='o'); "
            "e.resolve_target('laptop-cpu'); assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_compress_and_audit_are_callable_after_their_modules_are_imported(zoo_checkpoint, tmp_path, quick_measure):
    importlib.import_module("edgerobust.workstation.compress")  # binds the module to edgerobust.workstation.compress
    importlib.import_module("edgerobust.edge.audit")
    res = edgerobust.compress(edgerobust.CompressConfig(
        edgerobust.PrepareConfig(zoo_checkpoint.path, eval_samples=32), finetune=edgerobust.TrainConfig(epochs=0),
        max_prune_drop=None, out=tmp_path / "b"))
    assert (res.bundle / "model.onnx").is_file()
    assert res.metrics["macs_reduction"] >= 3
    report = edgerobust.audit(edgerobust.AuditConfig(model=res.bundle / "model.onnx", profile="laptop-cpu-1thread",
                                                     measure_memory=False, show_progress=False))
    clean = next(s for s in report.sets if s.kind == "clean")
    assert clean.n == 32
    assert abs(clean.deployed.accuracy.value - res.metrics["deployed_accuracy"]) < 1e-12
