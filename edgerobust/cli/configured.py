"""Commands that are thin maps onto a config: each flag names the config key it sets.

A command declares its flags as data (:class:`Flag`: the parameter, its typed ``Annotated`` option,
its default and the dotted config key it sets) and writes a short function that takes the
collected :class:`FlagValues`::

    @configured(FLAGS)
    def compress_cmd(model: ModelArg = None, config: ConfigFile = None, *, flags: FlagValues) -> None:
        cfg = flags.build(CompressConfig, config, {"prepare.model": model})

Typer sees every flag (the wrapper's signature lists them, typed, with their help); the function
sees one object. :meth:`FlagValues.build` lays the layers in order: the flags' defaults, then the
``--config`` file (TOML, JSON or a bundle's manifest.json), then the flags typed on the command
line, which always win.
"""
from __future__ import annotations

import enum
import functools
import inspect
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Callable, Mapping, Optional, Sequence

import typer

from edgerobust.configio import from_dict, merge, read_file
from edgerobust.errors import UsageError

ConfigFile = Annotated[Optional[Path], typer.Option(
    "--config", "-c", show_default=False,
    help="A config file (TOML or JSON; a bundle's manifest.json replays the config it was built from): every flag "
         "sets one of its keys (the config's field names, one table per stage: docs, Config files). Flags given "
         "beside --config override it.")]


@dataclass(frozen=True)
class Flag:
    """One option: ``param`` (the Python name Typer turns into the flag), its ``hint`` (an ``Annotated``
    typer option), its ``default``, and ``key``: the dotted config key it sets (None: a value the
    command reads itself). ``convert`` turns the typed value into the config's (an Enum becomes its
    value without it)."""

    param: str
    hint: Any
    default: Any = None
    key: Optional[str] = None
    convert: Optional[Callable[[Any], Any]] = None

    def value(self, typed: Any) -> Any:
        if self.convert is not None:
            return self.convert(typed)
        return typed.value if isinstance(typed, enum.Enum) else typed


class FlagValues:
    """The flags of one invocation: their values, and which the user typed (not defaults)."""

    def __init__(self, flags: Sequence[Flag], values: Mapping[str, Any], typed: set[str]):
        self.flags = {f.param: f for f in flags}
        self.values = dict(values)
        self.typed = set(typed)

    def __getitem__(self, param: str) -> Any:
        return self.values[param]

    def given(self, param: str) -> bool:
        """Whether the user typed this flag (or set its environment variable)."""
        return param in self.typed

    def layer(self, typed: bool) -> dict:
        """The config keys the flags set: the typed ones (``typed``) or the defaults that are not None."""
        out: dict = {}
        for name, f in self.flags.items():
            if f.key is None or (name in self.typed) != typed:
                continue
            value = self.values[name]
            if not typed and value is None:
                continue  # a None default leaves the library's default
            _put(out, f.key, f.value(value))
        return out

    def build(self, cls: type, config: Optional[Path], extra: Optional[Mapping[str, Any]] = None,
              defaults: Optional[Mapping[str, Any]] = None, model: Optional[Path] = None,
              out_for: Optional[str] = None) -> Any:
        """A ``cls`` config: the flags' defaults and ``defaults``, then the ``config`` file, then the typed
        flags and ``extra`` (dotted keys; None values are skipped in both). ``model``: the MODEL argument
        (``prepare.model``); ``out_for``: what ``--out`` names, for a command that needs it when no config
        file may give it."""
        if out_for is not None and config is None and self.values.get("out") is None:
            raise UsageError("Missing option --out.", fix=f"Give {out_for}: --out DIR.")
        extra = {**(extra or {}), "prepare.model": str(model) if model is not None else None}
        data = self.layer(typed=False)
        for key, value in (defaults or {}).items():
            if value is not None:
                _put(data, key, value)
        where = "the flags"
        if config is not None:
            data = merge(data, read_file(config))
            where = f"'{config}'"
        top = self.layer(typed=True)
        for key, value in (extra or {}).items():
            if value is not None:
                _put(top, key, value)
        for key, value in top.items():  # a table of flags laid over a list the file holds (attack specs)
            table = [f for f in self.flags.values() if f.key and f.key.startswith(f"{key}.")]
            complete = all(f.param in self.typed for f in table if f.default is not None)
            if isinstance(value, Mapping) and isinstance(data.get(key), list) and not complete:
                typed = sorted(f"--{f.param.replace('_', '-')}" for f in self.flags.values()
                               if f.key and f.key.startswith(f"{key}.") and f.param in self.typed)
                raise UsageError(f"{where} lists '{key}' one by one; {', '.join(typed)} cannot change part of that list.",
                                 fix=f"Give the whole grid with flags (e.g. --attacks and --eps together with a "
                                     f"'{key}' table in the file), or edit the list in the file.")
        aliases = {name: f.key for name, f in self.flags.items() if f.key}
        return from_dict(cls, merge(data, top), where=where, aliases=aliases)


def _put(table: dict, key: str, value: Any) -> None:
    *path, last = key.split(".")
    for part in path:
        table = table.setdefault(part, {})
    table[last] = value


def configured(flags: Sequence[Flag]) -> Callable[[Callable], Callable]:
    """Give ``fn`` (which takes ``flags: FlagValues`` by keyword) every flag of ``flags`` as a typed option."""

    def wrap(fn: Callable) -> Callable:
        own = [p for p in inspect.signature(fn).parameters.values() if p.name != "flags"]
        names = {p.name for p in own}
        clash = names & {f.param for f in flags}
        if clash:
            raise TypeError(f"{fn.__name__}: parameters {sorted(clash)} are also flags")
        extra = [inspect.Parameter(f.param, inspect.Parameter.KEYWORD_ONLY, default=f.default, annotation=f.hint)
                 for f in flags]

        @functools.wraps(fn)
        def command(**kwargs: Any) -> Any:
            values = {f.param: kwargs.pop(f.param, f.default) for f in flags}
            ctx = kwargs.pop(_CTX, None)
            typed = {name for name in values if ctx is not None and _typed(ctx, name)}
            return fn(**kwargs, flags=FlagValues(flags, values, typed))

        hints = typing.get_type_hints(fn, include_extras=True)  # fn's own annotations, resolved where fn lives
        params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY, annotation=hints.get(p.name, p.annotation))
                  for p in own] + extra
        params.append(inspect.Parameter(_CTX, inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context))
        command.__signature__ = inspect.Signature(params)  # what Typer reads
        command.__annotations__ = {p.name: p.annotation for p in params}
        del command.__wrapped__  # Typer must read __signature__, not fn's own
        return command

    return wrap


_CTX = "configured_context"  # the wrapper's context parameter (Typer passes the click context to it)


def _typed(ctx: typer.Context, name: str) -> bool:
    """Whether the value of ``name`` came from the command line or the environment, not a default."""
    source = ctx.get_parameter_source(name)  # an enum of click's (Typer may bundle its own click)
    return source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")
