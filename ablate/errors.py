"""The errors every floor raises, and how an exception becomes one line: imports nothing of ours."""

from __future__ import annotations

from hydra.errors import MissingConfigException


class ConfigError(ValueError):
    """A config value that is well typed but not allowed; its message is one line."""


class IncompatibleToggles(ConfigError):
    """A toggle the chosen optimizer does not have: in a sweep's cartesian product such a
    job is recorded as skipped, not run as something else under a wrong label."""


class PlanError(ValueError):
    """A plan that cannot become a preset; the message says what and what is known."""


def first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0]


def error_line(exc: BaseException) -> str:
    """Hydra and OmegaConf spread a bad value over several lines; keep what names it."""
    if isinstance(exc, MissingConfigException) and exc.options:
        group = exc.missing_cfg_file.rsplit("/", 1)[0]
        return f"{first_line(exc)}; allowed {group} options: {', '.join(exc.options)}"
    parts = [first_line(exc)]
    if exc.__cause__ is not None and first_line(exc.__cause__):
        parts.append(first_line(exc.__cause__))
    return ": ".join(parts)
