"""The `edgerobust` command line: a thin Typer layer over the library.

Every command parses its options, builds a config, calls one library function and renders the
result. A user-caused failure (an EdgeRobustError) becomes one message and exit code 2; a
traceback appears only with --debug.
"""
from __future__ import annotations

import inspect
import re
import signal

from typing import Annotated

import typer
from rich.errors import StyleSyntaxError
from rich.markup import escape
from rich.style import Style
from typer.core import TyperGroup

from edgerobust import __version__, ui
from edgerobust.cli.flags import to_flags
from edgerobust.errors import DependencyError, EdgeRobustError


# Optional packages and the pip extra that brings them: a command that needs one says so.
_EXTRAS = {"torch": "compress", "torchvision": "compress", "torch_pruning": "compress", "torchattacks": "compress",
           "sklearn": "compress", "PIL": "compress", "onnxscript": "compress", "onnxruntime": "cpu"}


# Options of the whole program that a user may also type after the subcommand.
_GLOBAL_FLAGS = ("-q", "--quiet", "--debug")
# Commands that keep their finished points on disk and resume them (edgerobust.research.runners).
_RESUMABLE = ("sweep", "recipe", "study", "optimize")
# What Rich reads as a markup tag (rich.markup.RE_TAGS), with the backslashes before it: `[query]` in
# "pip install 'edgerobust[query]'" is one, and `[grid]`, and `[default: 64]`.
_TAG = re.compile(r"(\\*)\[([a-z#/@][^[]*?)]")


def _is_style(tag: str) -> bool:
    """Whether a tag's text is markup meant as such: a Rich style ([bold], [/bold], [/], [red on white],
    [link=URL]). A tag whose text is no style ([query], [grid]) is bracketed text Rich would drop."""
    closing = tag.startswith("/")
    name, _, value = tag[closing:].partition("=")
    if not name or name == "link":
        return closing or name == "link"
    try:
        Style.parse(f"{name} {value}" if value else name)
    except StyleSyntaxError:
        return False
    return True


def _escape_markup(text: str) -> str:
    """Escape the bracketed text in text that Rich would take for a tag, keeping real styles and the
    brackets escaped already (an odd number of backslashes before them): a second pass changes nothing."""
    def one(m: re.Match) -> str:
        slashes, tag = m.groups()
        return m.group(0) if len(slashes) % 2 or _is_style(tag) else f"{slashes}\\[{tag}]"
    return _TAG.sub(one, text)


def _escape_help(cmd) -> None:
    """Escape Rich markup in the help of a click command and every command under it: typer renders
    help, option help, epilog and panel names as Rich markup, which ate "'edgerobust[query]'" whole."""
    if getattr(cmd, "rich_markup_mode", None) == "rich":
        for obj in (cmd, *cmd.params):
            for attr in ("help", "short_help", "epilog", "rich_help_panel"):
                text = getattr(obj, attr, None)
                if isinstance(text, str) and "[" in text:
                    setattr(obj, attr, _escape_markup(text))
    for sub in (getattr(cmd, "commands", None) or {}).values():  # typer 0.2x vendors click: no isinstance
        _escape_help(sub)


class _Group(TyperGroup):
    """Turns EdgeRobustError into one clear message and exit code 2, Ctrl-C into a word and 130."""

    def __init__(self, *args, **kwargs):
        # typer builds every command and sub-app (zoo, profiles, recipe) before this root group, from
        # the source strings, on each run: here the whole tree's help is escaped once, new commands too
        super().__init__(*args, **kwargs)
        _escape_help(self)

    def parse_args(self, ctx, args):
        # `edgerobust compress m.pt -q` means the same as `edgerobust -q compress m.pt`
        moved = [a for a in args if a in _GLOBAL_FLAGS]
        rest = [a for a in args if a not in _GLOBAL_FLAGS]
        return super().parse_args(ctx, moved + rest)

    def invoke(self, ctx):
        try:
            return self._invoke(ctx)
        except KeyboardInterrupt:
            _say_interrupted(ctx.invoked_subcommand or "edgerobust")
            raise typer.Exit(code=130) from None
        except Exception as exc:
            # a Ctrl-C inside a third-party import (torch's lazy sympy) can leave a half module that fails
            # later with another error: after a Ctrl-C, whatever breaks is the Ctrl-C's
            if not _PRESSED or isinstance(exc, (typer.Exit, typer.Abort, typer.TyperException)):
                raise
            _say_interrupted(ctx.invoked_subcommand or "edgerobust")
            raise typer.Exit(code=130) from None

    def _invoke(self, ctx):
        try:
            try:
                return super().invoke(ctx)
            except ModuleNotFoundError as exc:
                root = (exc.name or "").split(".")[0]
                if root not in _EXTRAS:
                    raise
                extra = _EXTRAS[root]
                fix = (f"pip install 'edgerobust[{extra}]'" if extra != "cpu" else
                       "pip install onnxruntime on a laptop or Raspberry Pi; on a Jetson, NVIDIA's onnxruntime-gpu "
                       "wheel for your JetPack (see the README)")
                raise DependencyError(f"This command needs the Python package '{root}', which is not installed.",
                                      why="edgerobust's core install is the torch-free audit side.", fix=fix) from exc
        except EdgeRobustError as exc:
            if (ctx.obj or {}).get("debug"):
                raise
            ui.err.print(f"[bold red]error:[/bold red] {escape(to_flags(exc.what))}", highlight=False)
            if exc.why:
                ui.err.print(f"  [dim]why:[/dim] {escape(to_flags(exc.why))}", highlight=False)
            if exc.fix:
                ui.err.print(f"  [dim]fix:[/dim] {escape(to_flags(exc.fix))}", highlight=False)
            raise typer.Exit(code=exc.exit_code) from None


app = typer.Typer(
    cls=_Group,
    name="edgerobust",
    help="Compress PyTorch models for edge devices, then audit the deployed model's adversarial "
         "robustness next to its speedup, on the device itself.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"edgerobust {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    debug: Annotated[bool, typer.Option("--debug", envvar="EDGEROBUST_DEBUG",
                                        help="Show the full traceback of errors.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Hide progress bars and status lines.")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    ctx.obj = {"debug": debug}
    # the library's status lines, warnings and progress bars on stderr; it names config fields, a
    # command-line user reads flags
    ui.install(quiet=quiet, words=to_flags)


def _register() -> None:
    # Each command module adds its commands to `app`. Imports stay light: torch is imported
    # inside the compress-side commands only, so `audit`/`profile` run without it.
    from edgerobust.cli import compress as cli_compress
    from edgerobust.cli import audit as cli_audit
    from edgerobust.cli import attack as cli_attack
    from edgerobust.cli import research as cli_research
    from edgerobust.cli import calibrate as cli_calibrate
    from edgerobust.cli import optimize as cli_optimize
    from edgerobust.cli import corrupt as cli_corrupt

    for mod in (cli_compress, cli_audit, cli_attack, cli_corrupt, cli_research, cli_calibrate, cli_optimize):
        mod.register(app)
    _reflow(app)


def _reflow(typer_app: typer.Typer) -> None:
    """Join the wrapped lines of each command's docstring paragraph: typer's rich help keeps a
    docstring's line breaks, so a paragraph wrapped at 100 columns broke mid-sentence at 80."""
    for cmd in typer_app.registered_commands:
        fn = cmd.callback
        if fn is not None and fn.__doc__:
            paras = inspect.cleandoc(fn.__doc__).split("\n\n")
            fn.__doc__ = "\n\n".join(" ".join(line.strip() for line in p.splitlines()) for p in paras)
    for group in typer_app.registered_groups:
        if group.typer_instance is not None:
            _reflow(group.typer_instance)


_register()


_SAID: list[str] = []  # the command whose Ctrl-C was reported
_PRESSED: list[int] = []  # a Ctrl-C arrived (main's handler), even where a third party swallowed it


def _on_ctrl_c(signum, frame):
    _PRESSED.append(signum)
    raise KeyboardInterrupt


def _say_interrupted(what: str) -> None:
    kept = ("Finished points are kept: run the same command again to resume." if what in _RESUMABLE else
            "Nothing half-written is left: bundles and reports appear only when complete.")
    ui.err.print(f"[bold red]interrupted:[/bold red] {escape(what)} stopped by Ctrl-C. {kept}", highlight=False)
    _SAID.append(what)


def main() -> None:
    """The CLI. Ctrl-C anywhere is one line and exit 130: in a command (the group's handler), and
    where typer meets it first (reading the arguments; typer then exits 130 without a word)."""
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # not where Ctrl-C comes ignored
        try:
            signal.signal(signal.SIGINT, _on_ctrl_c)
        except ValueError:  # not the main thread
            pass
    try:
        app()
    except KeyboardInterrupt:
        _say_interrupted("edgerobust")
        raise SystemExit(130) from None
    except SystemExit as exc:
        if exc.code == 130 and not _SAID:
            _say_interrupted("edgerobust")
        raise
