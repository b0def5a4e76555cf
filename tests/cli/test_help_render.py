"""`--help` of every command renders the bracketed text its source holds (issue 29, "Help that renders").

typer renders help through Rich markup, which read `'edgerobust[query]'` as a style tag and printed
`'edgerobust'`. The command tree is walked from `edgerobust.cli.app`, so a new command is checked too.
"""
import re
import sys
from pathlib import Path

import pytest
from rich.errors import StyleSyntaxError
from rich.style import Style
from typer.main import get_command
from typer.testing import CliRunner

from edgerobust.cli import app

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

runner = CliRunner()
# `edgerobust[query]` as the source spells it; the CLI may have escaped the bracket (`edgerobust\[query]`)
_EXTRA = re.compile(r"edgerobust\\?\[([A-Za-z0-9_.-]+)\]")
_TAG = re.compile(r"\\*\[([a-z#/@][^[]*?)]")  # what Rich reads as a markup tag (rich.markup.RE_TAGS)
_BOX = re.compile(r"[\u2500-\u257f]")  # Rich's panel borders: │ ─ ╭ ╮ ╰ ╯
_PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def _commands(cmd, path: tuple = ()):
    """(path, command) for cmd and everything under it. Duck-typed: typer 0.2x vendors click as typer._click."""
    yield path, cmd
    for name, sub in sorted((getattr(cmd, "commands", None) or {}).items()):
        yield from _commands(sub, (*path, name))


_TREE = list(_commands(get_command(app)))


def _source_texts(cmd) -> list[str]:
    """The help texts that `--help` of cmd shows: its own, and those of its visible parameters."""
    texts = [cmd.help, cmd.short_help, cmd.epilog]
    texts += [getattr(p, "help", None) for p in cmd.params if not getattr(p, "hidden", False)]
    return [t for t in texts if t]


def _is_style(tag: str) -> bool:
    """[bold], [/bold], [/], [link=URL]: markup meant as such, which styles rather than prints."""
    name = tag.lstrip("/")
    if name in ("", "link") or name.startswith("link="):
        return True
    try:
        Style.parse(name.replace("=", " "))
    except StyleSyntaxError:
        return False
    return True


def _flat(text: str) -> str:
    return " ".join(_BOX.sub(" ", text).split())


def _extras() -> set[str]:
    with open(_PYPROJECT, "rb") as f:
        return set(tomllib.load(f)["project"]["optional-dependencies"])


def test_the_tree_has_the_sub_apps():
    paths = {p for p, _ in _TREE}
    assert len(_TREE) > 10
    assert {("audit",), ("zoo",), ("profiles",), ("recipe",)} <= paths
    assert any(len(p) == 2 for p in paths)  # the sub-apps' commands are walked too


def test_some_help_names_an_extra():
    """The check below is not vacuous: some command's help asks for a pip extra."""
    assert any(_EXTRA.search(t) for _, cmd in _TREE for t in _source_texts(cmd))


@pytest.mark.parametrize("path", [p for p, _ in _TREE], ids=lambda p: " ".join(p) or "edgerobust")
def test_help_renders_bracketed_extras(path):
    cmd = dict(_TREE)[path]
    res = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    out = _flat(res.output)
    named = {m for t in _source_texts(cmd) for m in _EXTRA.findall(t)}
    assert named <= _extras(), f"not extras in pyproject.toml: {sorted(named - _extras())}"
    for extra in sorted(named):
        assert f"edgerobust[{extra}]" in out, f"edgerobust[{extra}] lost from `{' '.join(path)} --help`:\n{res.output}"
    # any other bracketed text too: [grid], [[models]], [default: 64]
    for tag in {t for text in _source_texts(cmd) for t in _TAG.findall(text) if not _is_style(t)}:
        assert f"[{' '.join(tag.split())}]" in out, f"[{tag}] lost from `{' '.join(path)} --help`:\n{res.output}"
    # escaped once, not twice; intended markup ([bold]...[/bold]) still styles rather than prints
    assert "\\[" not in out, res.output
    assert not re.search(r"\[/?(bold|dim|italic)\]", out), res.output


def test_names_that_read_as_markup_are_shown_as_they_are(tmp_path):
    """A path or a profile's text with brackets ('model[fp16].onnx', '[/x]') is printed whole: Rich
    markup dropped '[fp16]' silently and raised on '[/x]'."""
    from edgerobust import ui
    from _fixtures_gauntlet import cli

    with ui.err.capture() as cap:
        ui.info("Report written to runs/model[fp16]/r")
        ui.warn("the file [/x] is odd")
    assert "runs/model[fp16]/r" in cap.get() and "the file [/x] is odd" in cap.get()
    profile = tmp_path / "p.toml"
    profile.write_text('description = "laptop [/x] [fp16]"\n[[providers]]\nname = "CPUExecutionProvider"\n')
    r = cli("profiles", "show", profile)
    assert r.exit_code == 0 and "laptop [/x] [fp16]" in r.output, r.output
