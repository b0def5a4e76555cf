"""The `edgerobust` command line: a thin Typer layer over the library.

Every command parses its options, builds a config, calls one library function and renders the
result. A user-caused failure (an EdgeRobustError) becomes one message and exit code 2; a
traceback appears only with --debug.
"""
from __future__ import annotations

from typing import Annotated

import typer
from typer.core import TyperGroup

from . import __version__, ui
from .errors import EdgeRobustError


class _Group(TyperGroup):
    """Turns EdgeRobustError into one clear message and exit code 2."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except EdgeRobustError as exc:
            if (ctx.obj or {}).get("debug"):
                raise
            ui.err.print(f"[bold red]error:[/bold red] {exc.what}", highlight=False)
            if exc.why:
                ui.err.print(f"  [dim]why:[/dim] {exc.why}", highlight=False)
            if exc.fix:
                ui.err.print(f"  [dim]fix:[/dim] {exc.fix}", highlight=False)
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
    ui.set_quiet(quiet)


def _register() -> None:
    # Each command module adds its commands to `app`. Imports stay light: torch is imported
    # inside the compress-side commands only, so `audit`/`profile` run without it.
    from . import cli_compress, cli_audit, cli_attack  # noqa: F401

    for mod in (cli_compress, cli_audit, cli_attack):
        mod.register(app)


_register()


def main() -> None:
    app()
