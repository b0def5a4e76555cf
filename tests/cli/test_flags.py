"""Library messages name config fields; the CLI shows flags through one table (edgerobust.cli.flags)."""
import ast
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgerobust import ui
from edgerobust.cli import app
from edgerobust.cli.flags import _FIELD, FIELD_FLAGS, to_flags
from onnx_models import write_profile

PACKAGE = Path(__file__).resolve().parents[2] / "edgerobust"
LIBRARY = ("edge", "workstation", "research")
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]+")
# Files whose messages still name flags, being reworded; this list only shrinks.
NOT_YET: set[str] = set()  # every library file is clean
# Backticked names in library messages that are no config field with a flag.
NOT_FIELDS = {
    "format",  # QuantConfig.format: a library-only setting
    "deploy",  # CompressConfig.deploy: set by optimize for its chosen bundle (or a --config file)
    "space", "sparsity_min", "sparsity_max", "epochs_min",  # OptimizeConfig.space: set in a --config file
}


def _sources() -> list[tuple[str, str]]:
    out = []
    for part in LIBRARY:
        for p in sorted((PACKAGE / part).rglob("*.py")):
            out.append((p.relative_to(PACKAGE).as_posix(), p.read_text(encoding="utf-8")))
    return out


def test_to_flags_maps_known_fields_and_unquotes_the_rest():
    assert to_flags("`eval_samples` must be >= 1; got 0.") == "--eval-samples must be >= 1; got 0."
    assert (to_flags("Pass `overwrite` to replace it, or choose another `out`.")
            == "Pass --overwrite to replace it, or choose another --out.")
    assert to_flags("`prune.round_to` 1 prunes closer") == "--round-to 1 prunes closer"  # dotted: the last part
    assert to_flags("`verify` off") == "--no-verify off" and to_flags("`eval_set`/`adv_sets`") == "--eval/--adv"
    assert to_flags("run `edgerobust attack` then `no_such_field`") == "run `edgerobust attack` then no_such_field"
    assert to_flags("no backticks at all") == "no backticks at all" and to_flags("") == ""


def test_every_flag_in_the_table_is_spelled_as_a_flag():
    for field, flag in FIELD_FLAGS.items():
        assert re.fullmatch(r"[a-z_][a-z0-9_]*", field), field
        assert flag == "MODEL" or re.fullmatch(r"--[a-z][a-z0-9-]*", flag), (field, flag)


@pytest.fixture
def wide(monkeypatch):
    monkeypatch.setattr(ui.out, "width", 200)


def test_cli_error_shows_the_flags_of_the_fields_the_library_named(tmp_path, wide):
    lone = tmp_path / "model.onnx"
    lone.write_bytes(b"not a bundle")
    profile = write_profile(tmp_path / "fast.toml")
    r = CliRunner().invoke(app, ["audit", str(lone), "-p", str(profile), "--no-memory"])
    text = " ".join(r.stderr.split())
    assert r.exit_code == 2, r.output
    assert "There is no bundle (manifest.json) beside" in text
    assert "--baseline BASE.onnx and --eval EVAL.npz (and --adv SET.npz)" in text
    assert "`baseline`" not in text and "Traceback" not in r.output


def test_library_errors_name_fields_not_flags(tmp_path):
    from edgerobust.edge.audit import AuditConfig, audit
    from edgerobust.errors import BundleError

    lone = tmp_path / "model.onnx"
    lone.write_bytes(b"not a bundle")
    with pytest.raises(BundleError) as e:
        audit(AuditConfig(model=lone, measure_memory=False, show_progress=False))
    assert "`baseline` BASE.onnx and `eval_set` EVAL.npz" in e.value.fix and "--" not in e.value.fix


def test_no_flag_in_library_source():
    """The library speaks of config fields (in backticks); only edgerobust.cli knows flags."""
    assert NOT_YET <= {name for name, _ in _sources()}, "a file in NOT_YET is gone: drop it from the list"
    found = [f"{name}:{i}: {m.group(0)}" for name, text in _sources() if name not in NOT_YET
             for i, line in enumerate(text.splitlines(), 1) for m in FLAG.finditer(line)]
    assert not found, "\n".join(found)


def _message_strings(tree: ast.AST):
    """String pieces passed to an exception (``...Error(...)``), to a logger's warning / info or to ui.warn / ui.info."""
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        callee = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
        if callee.endswith("Error") or callee in ("warn", "warning", "info"):
            for arg in [*node.args, *(k.value for k in node.keywords)]:
                for sub in ast.walk(arg):
                    if isinstance(sub, ast.Constant) and isinstance(sub.value, str):
                        yield sub.lineno, sub.value


def test_backticked_names_in_messages_are_known_fields():
    unknown = [f"{name}:{line}: `{m.group(1)}`" for name, text in _sources()
               for line, s in _message_strings(ast.parse(text)) for m in _FIELD.finditer(s)
               if m.group(1) not in FIELD_FLAGS and m.group(1).rsplit(".", 1)[-1] not in FIELD_FLAGS
               and m.group(1) not in NOT_FIELDS]
    assert not unknown, "add each to FIELD_FLAGS (edgerobust/cli/flags.py) or to NOT_FIELDS:\n" + "\n".join(unknown)
