"""Configs as data: a frozen config dataclass to plain JSON values and back, versioned, every key checked.

A config file is the library's config written down (TOML or JSON), one table per stage::

    # compress.toml
    [prepare]
    model = "model.pt"
    data = "digits"

    [prune]
    sparsity = 0.5

    int8 = true          # keys of the whole job go before the first table in TOML
    attacks = { names = "fgsm,pgd", eps = "2/255,8/255" }

``load_config(CompressConfig, "compress.toml")`` builds the config; :func:`to_dict` writes one
back (a bundle's manifest records it under ``config``, and ``load_config`` takes the manifest
itself, so a bundle replays). :func:`from_dict` names any key the schema does not have, with the
closest known key, the schema's type and version. A value is checked against the field's type
(an eps may be written ``"8/255"``) before the config's own validation runs.
"""
from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import math
import os
import sys
import types
import typing
from pathlib import Path
from typing import Any, Mapping

from edgerobust.eps import as_float, parse_eps
from edgerobust.errors import UsageError

CONFIG_VERSION = 1  # bump when a key is renamed or its meaning changes; from_dict refuses newer files


def type_name(cls: type) -> str:
    """The ``_type`` a config of ``cls`` is recorded as: ``edgerobust.CompressConfig``."""
    return f"edgerobust.{cls.__name__}"


def to_dict(cfg: Any) -> dict:
    """``cfg`` (a config dataclass) as plain JSON values with its ``_type`` and ``_version``."""
    return {"_type": type_name(type(cfg)), "_version": CONFIG_VERSION, **_plain(cfg)}


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):  # numpy arrays and scalars
        return value.tolist()
    return value


def from_dict(cls: type, data: Mapping, *, where: str = "the config", aliases: Mapping[str, str] | None = None) -> Any:
    """A ``cls`` config built from ``data`` (as :func:`to_dict` writes it, ``_type``/``_version`` optional).

    ``where`` names the source in messages (a file's path); ``aliases`` maps other names a user may
    write (the CLI's flag names) to their keys, for the message about an unknown key. Unknown keys, a
    wrong ``_type``, a newer ``_version`` and a value of the wrong type are UsageErrors naming the key.
    """
    if not isinstance(data, Mapping):
        raise UsageError(f"{where} is not a table of keys and values.", fix=_schema_fix(cls))
    data = dict(data)
    kind, version = data.pop("_type", None), data.pop("_version", None)
    if kind is not None and kind != type_name(cls):
        raise UsageError(f"{where} holds a config of type {kind}; this needs {type_name(cls)}.",
                         fix="Give the config file written for this command.")
    if version is not None and (isinstance(version, bool) or not isinstance(version, int) or version < 1):
        raise UsageError(f"{where} has `_version` {version!r}, which is no config version.",
                         fix=f"Write _version = {CONFIG_VERSION}, or leave it out.")
    if version is not None and version > CONFIG_VERSION:
        raise UsageError(f"{where} is written in config version {version!r}; this edgerobust reads version "
                         f"{CONFIG_VERSION} of {type_name(cls)}.", why="The file was written by a newer edgerobust.",
                         fix="Upgrade edgerobust, or remove `_version` and check each key against this version's "
                             "schema.")
    return _build(cls, data, "", where, aliases or {})


def _schema_fix(cls: type) -> str:
    return f"See the {type_name(cls)} schema (version {CONFIG_VERSION}): keys {', '.join(_keys(cls))}."


def _keys(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls) if f.init]


def _build(cls: type, data: Mapping, prefix: str, where: str, aliases: Mapping[str, str] | None = None) -> Any:
    aliases = aliases or {}
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = _hints(cls)
    kwargs = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if key in ("_type", "_version") and prefix:  # a nested config written by to_dict: checked at the top
            continue
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            alias = aliases.get(name)
            fix = (f"'{name}' is the flag --{name.replace('_', '-')}; in a config file it is the key '{alias}'."
                   if alias and alias != name else f"Did you mean '{prefix}{close[0]}'?" if close
                   else "Remove it, or check its spelling.")
            raise UsageError(f"Unknown key '{name}' in {where}.",
                             why=f"{type_name(cls)} (config version {CONFIG_VERSION}) has the keys "
                                 f"{', '.join(f'{prefix}{k}' for k in fields)}.", fix=fix)
        load = fields[key].metadata.get("load")
        if load is not None:  # the field reads its own forms (e.g. attacks as a table or a list of specs)
            kwargs[key] = load(value, name, where, data)
        else:
            kwargs[key] = _convert(hints[key], value, name, where)
    missing = [f.name for f in fields.values() if f.name not in kwargs and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        raise UsageError(f"{where} lacks the key {', '.join(repr(prefix + m) for m in missing)} of {type_name(cls)}.",
                         fix=_schema_fix(cls))
    return cls(**kwargs)


@functools.lru_cache(maxsize=None)
def _hints(cls: type) -> dict:
    """``cls``'s field types, resolved once (get_type_hints compiles every annotation on each call)."""
    return typing.get_type_hints(cls, vars(sys.modules[cls.__module__]))


def _convert(hint: Any, value: Any, name: str, where: str) -> Any:
    """``value`` as the type ``hint`` names, or a UsageError naming ``name``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hasattr(value, "item") and type(value).__module__ == "numpy":  # a numpy scalar: its Python value
        value = value.item()
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if origin in (typing.Union, types.UnionType):
        if isinstance(value, str) and value.strip().lower() == "none" and type(None) in args and str not in args:
            value = None  # TOML has no null: "none" turns an optional setting off (a gate, random_start)
        if value is None:
            if type(None) in args:
                return None
            raise UsageError(f"'{name}' in {where} must be given a value; got null.")
        problems = []
        members = [a for a in args if a is not type(None)]
        if isinstance(value, Mapping):  # a table: the config types first, so their own message is the one shown
            members.sort(key=lambda a: not dataclasses.is_dataclass(a))
        for arg in members:
            try:
                return _convert(arg, value, name, where)
            except UsageError as e:
                problems.append(e)
        raise problems[0]
    if dataclasses.is_dataclass(hint):
        if isinstance(value, hint):
            return value
        if not isinstance(value, Mapping):
            raise UsageError(f"'{name}' in {where} must be a table (its keys: {', '.join(_keys(hint))}); "
                             f"got {value!r}.")
        return _build(hint, value, f"{name}.", where)
    if origin is tuple or hint is tuple:
        if isinstance(value, str) or not isinstance(value, (list, tuple)):
            raise UsageError(f"'{name}' in {where} must be a list; got {value!r}.")
        inner = args[0] if args and (len(args) == 2 and args[1] is Ellipsis) else Any
        return tuple(_convert(inner, v, f"{name}[{i}]", where) for i, v in enumerate(value))
    return _leaf(hint, value, name, where)


def _leaf(hint: Any, value: Any, name: str, where: str) -> Any:
    if hint is Any:
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise UsageError(f"'{name}' in {where} must be true or false; got {value!r}.")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise UsageError(f"'{name}' in {where} must be a whole number; got {value!r}.")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = as_float(value)
            if not math.isfinite(number):
                raise UsageError(f"'{name}' in {where} must be a finite number; got {value!r}.")
            return number
        if isinstance(value, str):  # "8/255" as the flags take it
            return parse_eps(value, name)
        raise UsageError(f"'{name}' in {where} must be a number; got {value!r}.")
    if hint is str:
        if isinstance(value, str):
            return value
        raise UsageError(f"'{name}' in {where} must be a text; got {value!r}.")
    if hint is Path:
        if isinstance(value, str):
            return Path(value)
        raise UsageError(f"'{name}' in {where} must be a path (text); got {value!r}.")
    return value


def read_file(path: str | Path) -> dict:
    """The table a config file holds (TOML or JSON); a bundle's manifest.json gives its recorded ``config``."""
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"Config file '{p}' not found." if not p.exists() else f"'{p}' is not a file.",
                         fix="Give a .toml or .json config file, or a bundle's manifest.json.")
    text = p.read_bytes()
    try:
        if p.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            if sys.version_info >= (3, 11):
                import tomllib
            else:  # pragma: no cover - Python 3.10
                import tomli as tomllib
            data = tomllib.loads(text.decode("utf-8-sig"))
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        kind = "JSON" if p.suffix.lower() == ".json" else "TOML"
        why = "It nests lists or tables too deeply." if isinstance(e, RecursionError) else f"{e}."
        raise UsageError(f"Cannot read the config file '{p}' as {kind}: {why}",
                         fix=f"Fix the {kind} syntax (or name the file .json / .toml for what it holds).") from None
    if not isinstance(data, dict):
        raise UsageError(f"The config file '{p}' holds no table of keys.", fix="Write key = value pairs.")
    if "config" in data and "schema_version" in data:  # a bundle's manifest: the config it was built from
        if not isinstance(data["config"], dict):
            raise UsageError(f"The manifest '{p}' records no config table.",
                             fix="Give a bundle's manifest.json written by edgerobust compress.")
        config = dict(data["config"])
        config.pop("out", None)  # a replay writes where it is told (default export/<name>), never over the
        config.pop("overwrite", None)  # bundle it replays
        return config
    return data


def load_config(cls: type, path: str | Path, overrides: Mapping | None = None) -> Any:
    """A ``cls`` config from a file (TOML, JSON or a bundle's manifest), ``overrides`` (nested keys) on top."""
    data = read_file(path)
    if overrides:
        data = merge(data, overrides)
    return from_dict(cls, data, where=f"'{path}'")


def merge(base: Mapping, top: Mapping) -> dict:
    """``top`` laid over ``base``, table by table (a table in ``top`` replaces a list in ``base``)."""
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = dict(value) if isinstance(value, Mapping) else value
    return out
