"""The errors every floor raises, and how an exception becomes one line: imports nothing of ours."""

from __future__ import annotations

import dataclasses

from hydra.errors import MissingConfigException
from omegaconf.errors import ConfigAttributeError, ConfigKeyError


class ConfigError(ValueError):
    """A config value that is well typed but not allowed; its message is one line."""


class IncompatibleToggles(ConfigError):
    """A toggle the chosen optimizer does not have: in a sweep's cartesian product such a
    job is recorded as skipped, not run as something else under a wrong label."""


class PlanError(ValueError):
    """A plan that cannot become a preset; the message says what and what is known."""


def unknown_key(name: str, where: str, known: list[str]) -> str:
    """The line for a key no schema has, with the keys allowed where it was set."""
    return f"{name}: unknown key (allowed under {where}: {', '.join(known)})"


def first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0]


def error_line(exc: BaseException) -> str:
    """Hydra and OmegaConf spread a bad value over several lines; keep what names it."""
    if isinstance(exc, MissingConfigException) and exc.options:
        group = exc.missing_cfg_file.rsplit("/", 1)[0]
        return f"{first_line(exc)}; allowed {group} options: {', '.join(exc.options)}"
    cause = exc.__cause__
    if isinstance(cause, (ConfigAttributeError, ConfigKeyError)) and dataclasses.is_dataclass(cause.object_type) \
            and cause.full_key:  # a key the schema of its group has not
        where = cause.full_key.rpartition(".")[0] or "the top level"
        return unknown_key(cause.full_key, where, [f.name for f in dataclasses.fields(
            cause.object_type) if not f.name.startswith("_")])
    parts = [first_line(exc)]
    if exc.__cause__ is not None and first_line(exc.__cause__):
        parts.append(first_line(exc.__cause__))
    return ": ".join(parts)
