"""The command line's overrides, checked against the schema before Hydra composes them: what
Hydra would take silently or report in many lines. A boolean key takes only true or false
(Hydra reads 2 as true); a key of an optional group (`ablation`, `tune`) needs the group
(`+ablation=NAME`), and the group itself is added with `+`; a key no schema has is named
with the keys allowed where it was set; a preset's seeds and a tuning grid are checked as
the job's check would, before the sweeper reads them."""

from __future__ import annotations

import dataclasses
import typing

import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, OverrideType
from hydra.errors import HydraException

from ..errors import ConfigError, unknown_key
from .check import check_lr_factors, check_seeds
from .schema import Config, config_dir

# Values the sweeper reads from these keys (conf/ablation/*.yaml, conf/tune/lr.yaml).
LIST_CHECKS = {"ablation.seeds": check_seeds, "tune.lr_factors": check_lr_factors}


def optional_groups() -> dict[str, type]:
    """The config groups a command adds with `+NAME=...` (None by default), by name, with
    their schema."""
    hints = typing.get_type_hints(Config)
    return {f.name: typing.get_args(hints[f.name])[0] for f in dataclasses.fields(Config)
            if f.default is None and typing.get_origin(hints[f.name]) is typing.Union
            and dataclasses.is_dataclass(typing.get_args(hints[f.name])[0])}


def options(group: str) -> str:
    return ", ".join(sorted(p.stem for p in (config_dir() / group).glob("*.yaml")))


def schema_type(key: str):
    """The schema's type of a dotted key (None where no schema types it: the optimizer and
    task groups hold any keys their own schema has); ConfigError for a key no schema has."""
    node, parts = Config, key.split(".")
    for i, part in enumerate(parts):
        hints = typing.get_type_hints(node)
        if part not in hints:
            raise ConfigError(unknown_key(key, ".".join(parts[:i]) or "the top level",
                                          [k for k in hints if not k.startswith("_")]))
        hint = hints[part]
        inner = (next(a for a in typing.get_args(hint) if a is not type(None))
                 if typing.get_origin(hint) is typing.Union else hint)
        if not dataclasses.is_dataclass(inner):
            return hint if i == len(parts) - 1 else None
        node = inner
    return node


def values(override: Override) -> list:
    if not override.is_sweep_override():
        return [override.value()]
    try:
        return list(override.sweep_iterator())
    except Exception:  # noqa: BLE001 - a sweep form Hydra checks itself (glob, interval)
        return []


def groups_added(overrides: list[Override], groups: dict[str, type]) -> set[str]:
    """The optional groups a command adds: with `+NAME=...`, and those an added preset brings
    in its defaults list (`- /tune: lr` in conf/ablation/adalomo_vs_adamw.yaml)."""
    added = set()
    for o in overrides:
        if o.type == OverrideType.ADD and o.key_or_group in groups:
            added.add(o.key_or_group)
            for value in values(o):
                path = config_dir() / o.key_or_group / f"{value}.yaml"
                preset = yaml.safe_load(path.read_text()) if path.is_file() else None
                defaults = preset.get("defaults", []) if isinstance(preset, dict) else []
                added |= {key.lstrip("/") for entry in defaults if isinstance(entry, dict)
                          for key in entry} & groups.keys()
    return added


def check_overrides(args: list[str]) -> None:
    """ConfigError (one line) for an override of `args` (a command line) that the module
    docstring names; a line Hydra cannot parse is left to Hydra's own message."""
    try:
        overrides = OverridesParser.create().parse_overrides(
            [a for a in args if not a.startswith("-") and "=" in a or a.startswith("~")])
    except HydraException:
        return
    groups = optional_groups()
    added = groups_added(overrides, groups)
    for o in overrides:
        key, first = o.key_or_group, o.key_or_group.split(".")[0]
        if key in groups and o.type == OverrideType.CHANGE:
            raise ConfigError(f"{o.input_line}: {key} is not in the default config: add it "
                              f"with +{o.input_line} (allowed {key} options: {options(key)})")
        if first in groups and key != first and first not in added:
            allowed = options(first)
            name = allowed if "," not in allowed else "NAME"  # the only option, or any
            raise ConfigError(f"{o.input_line}: sets a key of the {first} group, which this "
                              f"command does not add: add +{first}={name} (allowed {first} "
                              f"options: {allowed})")
        if o.type != OverrideType.CHANGE or "/" in key or first == "hydra" or key in groups:
            continue
        kind = schema_type(key)
        for value in values(o):
            if isinstance(value, str) and value.startswith("${"):  # resolved by OmegaConf
                continue
            if kind is bool and not isinstance(value, bool):
                raise ConfigError(f"{key}={value}: must be true or false")
            if kind == typing.Optional[bool] and not isinstance(value, (bool, type(None))):
                raise ConfigError(f"{key}={value}: must be true, false or null")
            if key in LIST_CHECKS and value == []:  # the sweeper would blame the swept key
                LIST_CHECKS[key](value)
