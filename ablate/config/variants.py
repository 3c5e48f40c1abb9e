"""A preset's variants and a sweep's jobs: `key=value` assignments on top of a composed config."""

from __future__ import annotations

from typing import Any

import yaml
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from ..errors import ConfigError
from .schema import config_dir, register_configs, typed


def parse_assignment(assignment: str) -> tuple[str, Any]:
    """`key=value` with the value read as YAML (true, 50, 0.5, none -> "none")."""
    key, sep, value = assignment.partition("=")
    if not sep:
        raise ConfigError(f"{assignment!r}: expected key=value")
    return key.strip(), yaml.safe_load(value)


def apply_variant(cfg: DictConfig) -> DictConfig:
    """Set the chosen `ablation.variant`'s key=value pairs (type-checked by the schema)."""
    ablation = cfg.ablation
    if ablation is None or ablation.variant is None:
        return cfg
    if ablation.variant not in ablation.variants:
        allowed = ", ".join(ablation.variants) or f"none (preset {ablation.name} has no variants)"
        raise ConfigError(f"ablation.variant={ablation.variant}: allowed are {allowed}")
    for assignment in ablation.variants[ablation.variant]:
        key, value = parse_assignment(assignment)
        if key == "optimizer":  # a group choice, which Hydra has already composed
            value = optimizer_option(value)
        try:
            OmegaConf.update(cfg, key, value, merge=False)
        except Exception as exc:  # noqa: BLE001 - OmegaConf raises several kinds
            raise ConfigError(f"ablation variant {ablation.variant}: {assignment}: "
                              f"{str(exc).splitlines()[0]}") from exc
    return cfg


def job_config(cfg: DictConfig) -> DictConfig:
    """A composed or saved config as a job runs it: typed by the schema, with its preset
    variant applied (not yet checked: `config.check`)."""
    return apply_variant(typed(cfg))


def optimizer_option(name: str) -> DictConfig:
    """conf/optimizer/NAME.yaml under the schema its defaults list names: what `optimizer=NAME`
    composes, for a preset variant that changes the optimizer (`optimizer=sgd`)."""
    path = config_dir() / "optimizer" / f"{name}.yaml"
    if not path.is_file():
        allowed = ", ".join(sorted(p.stem for p in path.parent.glob("*.yaml")))
        raise ConfigError(f"optimizer={name}: allowed are {allowed}")
    body = OmegaConf.load(path)
    # its schema, and another option it extends (conf/optimizer/apollo_mini.yaml: apollo)
    bases = [ConfigStore.instance().load(entry.split("@")[0].lstrip("/") + ".yaml").node
             if entry.startswith("/schema/") else optimizer_option(entry)
             for entry in body.pop("defaults", []) if entry != "_self_"]
    return OmegaConf.merge(*bases, body)


def compose(overrides: list[str] = ()) -> DictConfig:
    """The job config `python -m ablate OVERRIDES` would run (for tests and notebooks)."""
    from hydra import compose as hydra_compose, initialize_config_dir

    register_configs()
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        return hydra_compose("config", overrides=list(overrides))


def expand(overrides: list[str], config_loader=None) -> list[list[str]]:
    """Each job's overrides, as Hydra's basic sweeper expands a multirun: the product of
    every comma list (a later value of a key wins over an earlier one, as the command line
    over a preset's `hydra.sweeper.params`). The sweep, the estimator's table and the plan
    importer all expand through here. `config_loader` lets glob sweeps see the groups."""
    parsed = OverridesParser.create(config_loader=config_loader).parse_overrides(list(overrides))
    return [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]
