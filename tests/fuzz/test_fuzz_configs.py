"""Fuzzing what a user writes by hand: config files (TOML, JSON, a bundle's manifest) through
``load_config`` and the commands' ``--config``, study files through ``load_study``, eps texts and
lists, attack lists, and the CLI's number lists and choices. Each gives a value of the expected type
or one EdgeRobustError (exit 2 with one ``error:`` line through the CLI), never another exception,
never a traceback, never a file outside the output folder (tests/fuzzkit.py: the property)."""
from __future__ import annotations

import copy
import json
import math
import os
import re
import sys
import types
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgerobust.cli.options import floats
from edgerobust.configio import load_config, to_dict
from edgerobust.defaults import DEFAULT_ATTACKS, DEFAULT_EPS
from edgerobust.eps import parse_eps
from edgerobust.errors import UsageError
from edgerobust.registries import CALIBRATIONS, CRITERIA, FINETUNE_MODES, INT8_MODES, RATIOS
from edgerobust.research.configs import SweepConfig
from edgerobust.research.study import Study, load_study
from edgerobust.workstation.attacks import ATTACKS, AttackSpec, make_specs, split_eps_grid
from edgerobust.workstation.attacks.registry import FAMILIES
from edgerobust.workstation.configs import CompressConfig, PrepareConfig, PruneConfig, QuantConfig, TrainConfig
from _fixtures_gauntlet import cli
from fuzzkit import FUZZ, check_reader, examples, expect_cli, expect_error, files_under, inputs, mutated, \
    odd_values, replaced

ROOT = Path(__file__).resolve().parents[2]


# --- writing documents as a user would --------------------------------------------------------------

def _key(k) -> str:
    return _string(str(k))


def _string(s: str) -> str:
    return json.dumps(s, ensure_ascii=False).replace("\x7f", "\\u007f")  # a TOML basic string (DEL escaped too)


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, str):
        return _string(v)
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_key(k)} = {_toml_value(x)}" for k, x in v.items() if x is not None) + "}"
    return "[" + ", ".join(_toml_value(x) for x in v if x is not None) + "]"


def toml_text(doc: dict) -> str:
    """``doc`` as a TOML file: its plain keys first, then one [table] per table and [[table]] per list of
    tables (TOML has no null: None is left out)."""
    def pairs(table: dict) -> list[str]:
        return [f"{_key(k)} = {_toml_value(v)}" for k, v in table.items() if v is not None]

    def tables(v) -> bool:
        return isinstance(v, list) and bool(v) and all(isinstance(x, dict) for x in v)

    lines = pairs({k: v for k, v in doc.items() if not isinstance(v, dict) and not tables(v)})
    for k, v in doc.items():
        if isinstance(v, dict):
            lines += [f"[{_key(k)}]", *pairs(v)]
        elif tables(v):
            for x in v:
                lines += [f"[[{_key(k)}]]", *pairs(x)]
    return "\n".join(lines) + "\n"


def as_file(doc, suffix: str) -> bytes:
    """``doc`` as the bytes of a JSON or TOML file (a TOML file holds a table: other values go under a key)."""
    if suffix == ".json":
        return json.dumps(doc).encode("utf-8", "surrogatepass")
    return toml_text(doc if isinstance(doc, dict) else {"value": doc}).encode("utf-8", "surrogatepass")


# --- seeds: the project's own configs written down -----------------------------------------------------

def compress_seed() -> CompressConfig:
    return CompressConfig(PrepareConfig("m.pt", data="digits", normalize="0.5/0.25"), prune=PruneConfig(sparsity=0.6),
                          finetune=TrainConfig(epochs=1, mode="pgd-at"), int8=True,
                          attacks=tuple(make_specs("fgsm,pgd:20,autoattack", "2/255,8/255", alpha="1/255")),
                          corruptions="default", max_prune_drop=None)


def sweep_seed() -> SweepConfig:
    return SweepConfig(PrepareConfig("m.pt", eval_samples=64), out="sweep", sparsities=(0.3, 0.5), attacks="fgsm,pgd",
                       eps="2/255,8/255", corruptions="noise", focus_eps="8/255")


SEEDS = {"compress": (CompressConfig, to_dict(compress_seed())), "sweep": (SweepConfig, to_dict(sweep_seed()))}
# the same compress job as a user writes it: an attacks table in the flags' words, not a list of specs
SEEDS["compress-table"] = (CompressConfig, {**SEEDS["compress"][1], "attacks": {
    "names": DEFAULT_ATTACKS, "eps": DEFAULT_EPS, "steps": 10, "alpha": "1/255", "random_start": True}})
# a bundle's manifest: load_config replays the config it records
SEEDS["manifest"] = (CompressConfig, {"schema_version": 1, "config": SEEDS["compress"][1]})


def _load(cls):
    return lambda path: load_config(cls, path)


# --- the texts a user types: eps, eps lists, attack lists -------------------------------------------

EPS_CHARS = "0123456789./eE+-, _\u00a0٣٤²１"
EPS_WORDS = ["1/0", "0/0", "nan", "NaN", "inf", "-inf", "1e999", "1e-999", "1e308/1e-308", "8/255", "2/255", "0", "-1",
             ".", "/", "", " ", "0x10", "1_0", "٣/255", "٤/255", "１/255", "8/255/2", "1e", "e5", "+1", "1.", ".5",
             "9" * 400, "1e400/1e400", "2/0.0", "1/1e-400", "4e-1000/1"]
_EPS_WORD = st.sampled_from(EPS_WORDS) | st.text(EPS_CHARS, max_size=6)
# lists of eps, of fractions over unicode digits (which float() reads), of random text
EPS_TEXTS = st.one_of(st.text(max_size=20), st.text(EPS_CHARS, max_size=20), _EPS_WORD,
                      st.lists(_EPS_WORD, max_size=5).map(",".join),
                      st.lists(st.text("12٣٤１", min_size=1, max_size=2), min_size=2, max_size=4)
                      .map(lambda xs: ",".join(x + "/255" for x in xs)))
_ATTACK_ITEM = st.builds(lambda n, b: n + b,
                         st.sampled_from(sorted(ATTACKS) + sorted(FAMILIES) + ["", "none", "PGD", "pgd ", "x"]),
                         st.sampled_from(["", ":", ":0", ":1", ":50", ":-3", ":²", ":١٠", ":1e3", ":" + "9" * 5000, ": 7"]))
ATTACK_TEXTS = st.lists(_ATTACK_ITEM, max_size=4).map(",".join) | st.text(max_size=16)


# --- config files through load_config ---------------------------------------------------------------

@pytest.mark.parametrize("suffix", [".toml", ".json"])
def test_config_file_bytes(suffix):
    """Random bytes and byte-mutated config files (truncated, spliced, bad UTF-8), and deep nests."""
    seed = as_file(SEEDS["compress"][1], suffix)
    key = b'{"prepare": ' if suffix == ".json" else b"prepare = "
    nest = st.integers(1, 5000).map(lambda n: key + b"[" * n + b"]" * n + (b"}" if suffix == ".json" else b""))

    @FUZZ
    @given(inputs(seed) | nest)
    def run(data):
        check_reader(_load(CompressConfig), data, f"c{suffix}", CompressConfig)

    run()


def _half(a, b):
    """``a`` half the time, else ``b`` (``a | b`` would weigh each of b's own branches as much as a)."""
    return st.tuples(st.booleans(), a, b).map(lambda t: t[1] if t[0] else t[2])


_NUMBERS = st.sampled_from([10**400, -10**400, 2**64, -1, 0, float("nan"), float("inf"), 1e-300, 1e308, 0.01, 10])
_SEED_NAMES = st.sampled_from(sorted(SEEDS))
_WHOLE = odd_values(12)
# what a hand-edited number or text turns into: beyond any float, beyond int64, negative, NaN, a fraction
_LEAF_VALUES = _half(st.sampled_from([10**400, -10**400, 2**64, 2**63, -1, 0, float("nan"), float("-inf"), "1/0",
                                      "٣/255", "8/255", "", "none", True, [], {}]), odd_values(3))


def _leaves(doc, path=()) -> list[tuple]:
    """The paths to every value that is no table or list inside ``doc`` (list items included)."""
    items = doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else None
    if items is None:
        return [path]
    return [p for k, v in items for p in _leaves(v, (*path, k))]


def _at(doc, path: tuple):
    for k in path:
        doc = doc[k]
    return doc


@st.composite
def with_leaf(draw, doc: dict) -> dict:
    """``doc`` with one plain value anywhere inside (a list's item too) replaced by a _LEAF_VALUES one."""
    doc = copy.deepcopy(doc)
    paths = _leaves(doc)
    numbers = [p for p in paths if _at(doc, p).__class__ in (int, float)]
    *path, last = draw(st.sampled_from(numbers if numbers and draw(st.booleans()) else paths))
    _at(doc, path)[last] = draw(_LEAF_VALUES)
    return doc


@st.composite
def odd_docs(draw):
    """A seed config with one value somewhere replaced by an odd value, deleted, or a key added; or a
    whole odd value as the file (a list, a number, a deep nest)."""
    cls, doc = SEEDS[draw(_SEED_NAMES)]
    pick = draw(st.integers(0, 9))
    if pick == 0:
        return cls, draw(_WHOLE)
    return cls, draw(with_leaf(doc) if pick < 5 else replaced(doc))


SUFFIXES = st.sampled_from([".toml", ".json"])


def test_config_file_odd_values():
    """Valid configs with wrong types, missing and extra keys, huge and negative numbers, NaN/Inf,
    unicode and nesting anywhere inside (down to the attack specs of a list), as TOML or JSON."""
    @FUZZ
    @given(odd_docs(), SUFFIXES)
    def run(case, suffix):
        cls, doc = case
        check_reader(_load(cls), as_file(doc, suffix), f"c{suffix}", cls)

    run()


_TEXT = st.text(min_size=1, max_size=12)
PREPARES = st.builds(PrepareConfig, _TEXT, arch=st.none() | _TEXT, num_classes=st.none() | st.integers(2, 10**6),
                     data=st.none() | st.sampled_from(["digits", "npz:x.npz", "folder:é ∂"]),
                     normalize=st.sampled_from(["auto", "none", "data", "imagenet", "0.5/0.25", "0.1,0.2,0.3/1,2,3"]),
                     seed=st.integers(0, 2**63 - 1), eval_samples=st.integers(1, 2**40),
                     device=st.sampled_from(["auto", "cpu", "cuda", "cuda:3"]))
PRUNES = st.builds(PruneConfig, sparsity=st.floats(0, 1, exclude_min=True, exclude_max=True),
                   criterion=st.sampled_from(list(CRITERIA)), ratios=st.sampled_from(list(RATIOS)),
                   round_to=st.none() | st.integers(1, 64), ignore_layers=st.lists(_TEXT, max_size=3).map(tuple))
TRAINS = st.builds(TrainConfig, epochs=st.integers(0, 10**4), lr=st.floats(1e-9, 10),
                   mode=st.sampled_from(list(FINETUNE_MODES)), adv_eps=st.floats(1e-6, 1))
QUANTS = st.builds(QuantConfig, mode=st.sampled_from(list(INT8_MODES)), calibration=st.sampled_from(list(CALIBRATIONS)))
SPECS = st.builds(lambda names, eps: tuple(make_specs(",".join(names), ",".join(eps))) if names else (),
                  st.lists(st.sampled_from(sorted(ATTACKS)), unique=True, max_size=3),
                  st.lists(st.sampled_from(["0", "1/255", "2/255", "8/255", "0.03", "1e-2", "0.5"]), unique=True,
                           min_size=1, max_size=3))
# a valid CompressConfig drawn across its stages' choices
COMPRESS_CONFIGS = st.builds(CompressConfig, PREPARES, prune=PRUNES, finetune=TRAINS, quant=QUANTS, int8=st.booleans(),
                             attacks=SPECS, corruptions=st.sampled_from(["none", "default", "fog,noise"]),
                             corruption_severities=st.sampled_from(["1", "2,4", "1,2,3,4,5"]))


def test_valid_config_file_reads_back(tmp_path):
    """A config the library builds, written as TOML or JSON, reads back equal."""
    @FUZZ
    @given(COMPRESS_CONFIGS, SUFFIXES)
    def run(cfg, suffix):
        path = tmp_path / f"c{suffix}"
        path.write_bytes(as_file(to_dict(cfg), suffix))
        assert expect_error(lambda: load_config(CompressConfig, path), CompressConfig) == cfg

    run()


_TABLE_VALUES = _NUMBERS | _LEAF_VALUES | st.sampled_from(["2/255", True])
# the attacks table of a config file: texts from the eps and attack fuzzers, odd values for any key
ATTACK_TABLES = st.builds(lambda names, eps, odd: {"names": names, "eps": eps, **odd},
                          _half(st.sampled_from(["pgd", "fgsm,pgd:5", "autoattack,square:9", "cw"]), ATTACK_TEXTS),
                          _half(st.sampled_from(["8/255", "0,0.1", "1"]), EPS_TEXTS),
                          st.dictionaries(st.sampled_from(["steps", "alpha", "random_start", "names", "eps", "Alpha"]),
                                          _TABLE_VALUES, max_size=2))


def test_attacks_table_in_config(tmp_path):
    """`attacks` as a table of texts (names with budgets, eps lists, steps, alpha) in a JSON config."""
    path = tmp_path / "c.json"

    @FUZZ
    @given(ATTACK_TABLES)
    def run(table):
        path.write_bytes(as_file({**SEEDS["compress"][1], "attacks": table}, ".json"))
        cfg = expect_error(lambda: load_config(CompressConfig, path), CompressConfig, tmp_path, allowed=("c.json",))
        assert cfg is None or len({s.name for s in cfg.attacks}) == len(cfg.attacks)

    run()


# --- config files through the commands' --config ----------------------------------------------------

@pytest.fixture
def reached(monkeypatch):
    """compress and sweep stop, exit 0, where the work would begin: the configs they were given."""
    import typer

    import edgerobust.cli.research as cli_research

    got = []

    def stop(cfg, *args, **kwargs):
        got.append(cfg)
        raise typer.Exit(0)

    for name, attrs in (("edgerobust.workstation.compress", {"compress": stop}),
                        ("edgerobust.research.sweep", {"sweep": stop, "findings": lambda *a: []})):
        module = types.ModuleType(name)
        module.__dict__.update(attrs)
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setattr(cli_research, "point_runner", lambda *args: None)
    return got


def test_config_file_through_cli(reached, tmp_path, monkeypatch):
    """`compress --config` and `sweep --config` with odd and mutated TOML and JSON files: exit 0 or one
    error line, nothing written (relative outputs land under the working folder, which is watched)."""
    monkeypatch.chdir(tmp_path)

    def files(suffix: str):
        seeds = [as_file(doc, suffix) for _, doc in SEEDS.values()]
        return st.one_of(odd_docs().map(lambda case: as_file(case[1], suffix)),
                         st.sampled_from(seeds).flatmap(mutated)).map(lambda data: (suffix, data))

    @examples(0.2)
    @given(files(".toml") | files(".json"), st.sampled_from(["compress", "sweep"]))
    def run(file, command):
        suffix, data = file
        path = tmp_path / f"c{suffix}"
        path.write_bytes(data)
        before = files_under(tmp_path)
        args = ["--out", tmp_path / "o"] if command == "sweep" else []
        result = cli(command, "--config", path, *args)
        expect_cli(result, tmp_path, before)
        if result.exit_code == 0:
            assert isinstance(reached[-1], CompressConfig if command == "compress" else SweepConfig)

    run()


# --- study files through load_study -----------------------------------------------------------------

def study_seed() -> str:
    """The study file of docs/research.md."""
    text = (ROOT / "docs" / "research.md").read_text(encoding="utf-8")
    return next(b for b in re.findall(r"```toml\n(.*?)```", text, re.S) if "[[models]]" in b)


_MODEL_NAMES = _half(st.sampled_from(["..", ".", "a/b", "../x", "/abs", "cnn", "", "\\x"]), st.text(max_size=6))


@st.composite
def odd_studies(draw, doc: dict):
    """The study with one value replaced at the top, in [grid], in a [[models]] table, or any plain value
    (a [grid] list's item too), or a second model named oddly."""
    doc = copy.deepcopy(doc)
    where = draw(st.sampled_from(["top", "grid", "model", "leaf", "number", "models"]))
    if where == "top":
        return draw(replaced(doc, 0))
    if where == "grid":
        doc["grid"] = draw(replaced(doc["grid"], 0))
    elif where == "model":
        doc["models"].append(draw(replaced(doc["models"][0], 0)))
    elif where == "models":
        doc["models"].append({**doc["models"][0], "name": draw(_MODEL_NAMES)})
    elif where == "number":  # an item of a [grid] list of numbers: huge, negative, NaN
        items = doc["grid"][draw(st.sampled_from(["sparsities", "seeds"]))]
        items[draw(st.integers(0, len(items) - 1))] = draw(_NUMBERS)
    else:
        doc = draw(with_leaf(doc))
    return doc


def _inside(path: Path, root: Path) -> bool:
    p, r = os.path.normpath(os.path.abspath(path)), os.path.normpath(os.path.abspath(root))
    return p.startswith(r + os.sep)


def test_study_file(tmp_path):
    """Byte-mutated and structurally changed study files: a Study whose sweeps all write under `out`,
    or one UsageError; load_study writes nothing."""
    import tomllib

    seed = study_seed()
    doc = tomllib.loads(seed)
    out = tmp_path / "out"

    @FUZZ
    @given(st.one_of(mutated(seed.encode()), odd_studies(doc).map(lambda d: toml_text(d).encode())))
    def run(data):
        path = tmp_path / "study.toml"
        path.write_bytes(data)
        study = expect_error(lambda: load_study(path, out, device="cpu"), Study, tmp_path, allowed=("study.toml",))
        if study is not None:
            assert study.sweeps and all(_inside(cfg.out, out) for _, _, cfg in study.sweeps), \
                [str(cfg.out) for _, _, cfg in study.sweeps]

    run()


def test_parse_eps():
    """One eps: a finite number >= 0, or one UsageError."""
    @FUZZ
    @given(EPS_TEXTS)
    def run(text):
        value = expect_error(lambda: parse_eps(text), float)
        assert value is None or (math.isfinite(value) and value >= 0)

    run()


def test_eps_and_attack_lists():
    """An eps list and an attacks text through make_specs: specs with distinct names (their file
    names in adv/), or one UsageError."""
    @FUZZ
    @given(ATTACK_TEXTS, EPS_TEXTS, st.none() | st.sampled_from(["1/255", "nan", "0", "1e999"]) | st.floats())
    def run(attacks, eps, alpha):
        grid = expect_error(lambda: split_eps_grid(eps), list)
        assert grid is None or len({v for _, v in grid}) == len(grid)
        for names, a in ((attacks, alpha), ("fgsm", None)):  # the eps list alone too
            specs = expect_error(lambda: make_specs(names, eps, alpha=a), list)
            if specs:
                assert all(isinstance(s, AttackSpec) for s in specs)
                assert len({s.name for s in specs}) == len(specs), [s.name for s in specs]

    run()


def test_number_lists():
    """The CLI's number lists (`--sparsities`, `--mean`, `--std`): one float per entry, or one UsageError."""
    @FUZZ
    @given(EPS_TEXTS)
    def run(text):
        value = expect_error(lambda: floats(text, "--sparsities"), tuple)
        assert value is None or (len(value) == len(text.split(",")) and all(isinstance(v, float) for v in value))

    run()


def _expect_cli_or_choice(result, root: Path, before: set[str]) -> None:
    """expect_cli, where click's own refusal of a choice (its 'Invalid value' panel, exit 2) also counts."""
    if result.exit_code == 2 and "error:" not in result.output:
        assert "Traceback" not in result.output and "Invalid value" in " ".join(result.output.split()), result.output
        return
    expect_cli(result, root, before)


def test_list_flags_through_cli(reached, tmp_path, monkeypatch):
    """`--sparsities`, `--eps`, `--attacks`, `--corruption-severities` and the `--ratios` choice as typed on
    the command line: exit 0 or one error line (or click's refusal of a choice); nothing written."""
    monkeypatch.chdir(tmp_path)
    flags = {"--sparsities": "sweep", "--eps": "compress", "--attacks": "compress", "--corruption-severities": "sweep",
             "--ratios": "compress", "--focus-eps": "sweep"}
    text = st.one_of(EPS_TEXTS, ATTACK_TEXTS, st.sampled_from(list(RATIOS) + ["Global", "mrs ", ""]))

    @examples(0.2)
    @given(st.sampled_from(sorted(flags)), text)
    def run(flag, value):
        before = files_under(tmp_path)
        command = flags[flag]
        args = ["--out", tmp_path / "o"] if command == "sweep" else []
        result = cli(command, "m.pt", *args, f"{flag}={value}")
        _expect_cli_or_choice(result, tmp_path, before)
        if result.exit_code == 0 and flag == "--ratios":
            assert reached[-1].prune.ratios in RATIOS

    run()


# Found by fuzzing ---------------------------------------------------------------------------------------

def _one_error(call, *phrases: str) -> str:
    with pytest.raises(UsageError) as exc:
        call()
    message = str(exc.value)
    assert all(p in message for p in phrases), message
    return message


@pytest.mark.parametrize("suffix, text", [(".json", '{"prepare": ' + "[" * 5000 + "]" * 5000 + "}"),
                                          (".toml", "prepare = " + "[" * 5000 + "]" * 5000)])
def test_found_deep_nesting_in_config_is_one_error(suffix, text, tmp_path):
    path = tmp_path / f"c{suffix}"
    path.write_text(text)
    _one_error(lambda: load_config(CompressConfig, path), "Cannot read the config file", "nests")


@pytest.mark.parametrize("suffix", [".json", ".toml"])
def test_found_huge_whole_number_in_config_is_one_error(suffix, tmp_path):
    path = tmp_path / f"c{suffix}"
    path.write_bytes(as_file({"prepare": {"model": "m.pt"}, "prune": {"sparsity": 10**400}}, suffix))
    _one_error(lambda: load_config(CompressConfig, path), "'prune.sparsity'", "finite number")


def test_found_huge_alpha_in_attacks_table_is_one_error(tmp_path):
    path = tmp_path / "c.json"
    path.write_bytes(as_file({"prepare": {"model": "m.pt"}, "attacks": {"names": "pgd", "alpha": 10**400}}, ".json"))
    _one_error(lambda: load_config(CompressConfig, path), "`alpha`", "finite number")
    _one_error(lambda: AttackSpec("pgd", 10**400), "finite number")


def test_found_unicode_digit_budget_is_one_error():
    _one_error(lambda: make_specs("apgd:²", "8/255"), "Cannot read the budget")
    _one_error(lambda: make_specs("pgd:" + "9" * 5000, "8/255"), "Cannot read the budget")


def test_found_unicode_digit_eps_is_refused():
    """'٠/011' and '١/011' were two eps whose sets had the same file name (fgsm__-011)."""
    _one_error(lambda: parse_eps("١/011"), "Cannot read the eps value")
    _one_error(lambda: make_specs("fgsm", "٠/011,١/011"), "Cannot read the eps value")
    assert [s.name for s in make_specs("fgsm", "0/011,1/011")] == ["fgsm_0-011", "fgsm_1-011"]


@pytest.mark.parametrize("data", [b"\x80name = 'x'\n", b"a = " + b"[" * 5000 + b"]" * 5000])
def test_found_unreadable_study_file_is_one_error(data, tmp_path):
    path = tmp_path / "study.toml"
    path.write_bytes(data)
    _one_error(lambda: load_study(path, tmp_path / "out", device="cpu"), "not valid TOML")


@pytest.mark.parametrize("model, phrase", [('name = ".."', "models[0].name"), ('name = "/abs"', "models[0].name"),
                                           ('path = ".."', "models[0].name")])
def test_found_study_model_name_outside_out_is_refused(model, phrase, tmp_path):
    """A model's name is its folder under out: '..' or '/abs' put its sweeps outside."""
    path = tmp_path / "study.toml"
    path.write_text(f'[[models]]\npath = "m.pt"\n{model}\n'.replace('path = "m.pt"\npath', "path"))
    _one_error(lambda: load_study(path, tmp_path / "out", device="cpu"), phrase, "no folder name")


@pytest.mark.parametrize("grid, phrase", [(f"sparsities = [{10**400}]", "sweep sparsity must lie in [0, 1)"),
                                          ('sparsities = ["1/2"]', "grid.sparsities must list numbers"),
                                          ("precisions = [1]", "grid.precisions must list texts"),
                                          ("seeds = []", "grid.seeds is empty"),  # the long profile's find: 0 sweeps
                                          ("finetune = []", "grid.finetune is empty")])
def test_found_odd_study_grid_item_is_one_error(grid, phrase, tmp_path):
    path = tmp_path / "study.toml"
    path.write_text(f'[[models]]\npath = "m.pt"\n[grid]\n{grid}\n')
    _one_error(lambda: load_study(path, tmp_path / "out", device="cpu"), phrase)


def test_found_unicode_digit_severity_is_one_error():
    from edgerobust.workstation.corrupt.registry import parse_severities

    _one_error(lambda: parse_severities("²"), "`corruption_severities`")


def test_found_unicode_digit_processor_id_in_a_profile_is_one_error(tmp_path):
    """The same str.isdigit() pattern in a profile's thread_affinity ('²' passed it, then int() raised)."""
    from edgerobust.edge.runtime.profiles import load_profile, profile_text
    from edgerobust.errors import ProfileError

    text = profile_text("laptop-cpu").replace("[session]", '[session]\nintra_op_threads = 2\nthread_affinity = "²"', 1)
    text = re.sub(r"(?m)^intra_op_threads = (?!2\n).*\n", "", text)
    path = tmp_path / "p.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ProfileError, match="not a 1-based processor id"):
        load_profile(path)
