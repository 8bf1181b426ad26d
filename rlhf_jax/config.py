"""Typed, frozen experiment configs with strict command-line overrides.

Every experiment module defines `get_config(preset=None)` returning a frozen dataclass (nested
dataclasses allowed). On the command line:

    python -m experiments.demo --config=tiny --config.train.steps=20 --config.mesh.data=2

`--config=NAME` picks a preset: one of the paper's settings for this experiment
(`rlhf_jax.training.paper_configs`, `NAME@LAYOUT` to choose the hardware layout), else whatever
the experiment's `get_config(NAME)` knows; each `--config.a.b=value` replaces one
field, parsed by the field's type annotation (int, float, str, bool, Literal, Enum, Optional,
tuples, nested dataclasses). An unknown key is an error that lists the valid keys there; a value
of the wrong type is an error naming the key and the expected type.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import sys
import types
import typing
from typing import Any, Callable, Literal, Sequence, Union, get_args, get_origin


class ConfigError(ValueError):
    """A bad config key or value; the message names the key."""


def _hints(cls) -> dict[str, Any]:
    module = sys.modules.get(cls.__module__)
    return typing.get_type_hints(cls, globalns=vars(module) if module else None)


def parse_value(text: str, tp: Any, key: str) -> Any:
    """Parses a command-line string as type `tp`; raises ConfigError naming `key`."""
    origin, args = get_origin(tp), get_args(tp)
    if origin in (Union, types.UnionType):
        if type(None) in args and text.lower() in ("none", "null"):
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return parse_value(text, arg, key)
            except ConfigError:
                pass
        raise ConfigError(f"--config.{key}={text!r}: expected {tp}")
    if origin is Literal:
        for choice in args:
            if str(choice) == text or (isinstance(choice, bool) and text.lower() == str(choice).lower()):
                return choice
        raise ConfigError(f"--config.{key}={text!r}: must be one of {list(args)}")
    if origin in (tuple, list):
        items = [t for t in (s.strip() for s in text.strip("()[]").split(",")) if t]
        if len(args) == 2 and args[1] is Ellipsis:
            value = [parse_value(t, args[0], key) for t in items]
        elif args:
            if len(items) != len(args):
                raise ConfigError(f"--config.{key}={text!r}: expected {len(args)} comma-separated values")
            value = [parse_value(t, a, key) for t, a in zip(items, args)]
        else:
            value = items
        return tuple(value) if origin is tuple else value
    if tp is bool:
        if text.lower() in ("true", "1", "yes"):
            return True
        if text.lower() in ("false", "0", "no"):
            return False
        raise ConfigError(f"--config.{key}={text!r}: expected a boolean (true/false)")
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        for member in tp:
            if text in (member.name, str(member.value)):
                return member
        raise ConfigError(f"--config.{key}={text!r}: must be one of {[m.name for m in tp]}")
    if tp is int:
        try:
            return int(text)
        except ValueError:
            try:  # 1e6 is a fine way to write an int
                value = float(text)
            except ValueError:
                value = None
            if value is not None and value.is_integer():
                return int(value)
            raise ConfigError(f"--config.{key}={text!r}: expected int") from None
    if tp in (float, str):
        try:
            return tp(text)
        except ValueError:
            raise ConfigError(f"--config.{key}={text!r}: expected {tp.__name__}") from None
    if dataclasses.is_dataclass(tp):
        raise ConfigError(f"--config.{key} is a group; set its fields, e.g. --config.{key}.<field>=...")
    if tp is Any:
        return text
    raise ConfigError(f"--config.{key}: fields of type {tp} cannot be set from the command line")


def override(cfg: Any, key: str, text: str, *, _prefix: str = "") -> Any:
    """A copy of frozen dataclass `cfg` with dotted `key` set from string `text`."""
    head, _, rest = key.partition(".")
    full = _prefix + key
    if not dataclasses.is_dataclass(cfg):
        raise ConfigError(f"config key {full!r}: cannot descend into a {type(cfg).__name__}")
    names = sorted(f.name for f in dataclasses.fields(cfg))
    if head not in names:
        where = f"under {_prefix[:-1]!r}" if _prefix else "here"
        raise ConfigError(f"unknown config key {full!r}; valid keys {where}: {names}")
    tp = _hints(type(cfg))[head]
    current = getattr(cfg, head)
    if not rest:
        return dataclasses.replace(cfg, **{head: parse_value(text, tp, full)})
    if current is None:  # an optional group not set yet: start from its defaults
        group_type = next((a for a in get_args(tp) if dataclasses.is_dataclass(a)), None)
        if group_type is None:
            raise ConfigError(f"config key {full!r}: {head!r} is not a group of settings")
        current = group_type()
    return dataclasses.replace(cfg, **{head: override(current, rest, text, _prefix=_prefix + head + ".")})


def apply_overrides(cfg: Any, overrides: Sequence[tuple[str, str]]) -> Any:
    for key, text in overrides:
        cfg = override(cfg, key, text)
    return cfg


def parse_argv(argv: Sequence[str]) -> tuple[str | None, list[tuple[str, str]]]:
    """Splits `--config=NAME` and `--config.key=value` flags; anything else is an error."""
    preset, overrides = None, []
    for arg in argv:
        if arg.startswith("--config="):
            preset = arg.split("=", 1)[1]
        elif arg.startswith("--config.") and "=" in arg:
            key, text = arg[len("--config."):].split("=", 1)
            overrides.append((key, text))
        else:
            raise ConfigError(
                f"unrecognized argument {arg!r}; use --config=PRESET and --config.key=value")
    return preset, overrides


def to_dict(cfg: Any) -> dict[str, Any]:
    """A JSON-ready dict of a (nested) dataclass config, for logs and checkpoints."""
    def enc(v):
        if dataclasses.is_dataclass(v):
            return {f.name: enc(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, enum.Enum):
            return v.name
        if isinstance(v, (tuple, list)):
            return [enc(x) for x in v]
        return v
    return enc(cfg)


def experiment_name(get_config: Callable[..., Any]) -> str:
    """The module of an experiment's `get_config`, e.g. 'experiments.ppo' (also under `python -m`,
    where the module is `__main__` and its spec keeps the real name)."""
    module = sys.modules.get(get_config.__module__)
    spec = None if module is None else module.__spec__
    return spec.name if spec is not None else get_config.__module__


def preset_config(get_config: Callable[..., Any], name: str) -> Any:
    """The config of preset `name`: a paper preset of the experiment (`NAME` or `NAME@LAYOUT`), else
    `get_config(name)`; an unknown name is a ConfigError listing the paper presets and layouts."""
    from rlhf_jax.training import paper_configs

    experiment = experiment_name(get_config)
    try:
        return paper_configs.with_preset(experiment, name, get_config())[0]
    except KeyError:
        pass
    try:
        return get_config(name)
    except ValueError as e:
        known = sorted(paper_configs.presets_for(experiment))
        hint = (f"; paper presets of {experiment}: {known}, as NAME or NAME@LAYOUT with a layout of "
                f"{sorted(paper_configs.LAYOUTS)}") if known else ""
        raise ConfigError(f"--config={name!r}: {e}{hint}") from None


def load_config(get_config: Callable[..., Any], argv: Sequence[str]) -> Any:
    """The preset's config (or `get_config()`) with the command-line overrides applied."""
    preset, overrides = parse_argv(argv)
    cfg = preset_config(get_config, preset) if preset is not None else get_config()
    return apply_overrides(cfg, overrides)


def run(get_config: Callable[..., Any], main: Callable[[Any], Any], argv: Sequence[str] | None = None):
    """Entry point for experiment modules: parse flags, print the config, call `main(cfg)`."""
    from rlhf_jax.distributed import initialize_from_env

    several = initialize_from_env()  # before anything touches a device
    argv = sys.argv[1:] if argv is None else argv
    try:
        cfg = load_config(get_config, argv)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        raise SystemExit(2)
    import jax

    if not several or jax.process_index() == 0:  # (one process: do not start the backend yet)
        print("config:", json.dumps(to_dict(cfg), sort_keys=True))
    return main(cfg)
