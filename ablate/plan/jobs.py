"""The jobs a preset expands to, as the overrides `python -m ablate` would need for each."""

from __future__ import annotations

from hydra.errors import HydraException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ..config.schema import register_configs
from ..config.variants import expand
from ..errors import PlanError, first_line
from .preset import yaml_value


def sweeps(preset_body: dict) -> list[str]:
    """The preset's `hydra.sweeper.params` as overrides (`key=a,b`), each checked alone so
    that an error names its key."""
    register_configs()  # the sweeps' ${sweep_values:...}
    try:
        node = OmegaConf.select(OmegaConf.create(preset_body), "hydra.sweeper.params")
        params = {} if node is None else OmegaConf.to_container(node, resolve=True)
    except OmegaConfBaseException as exc:
        raise PlanError(f"hydra.sweeper.params: {first_line(exc)}") from None
    overrides = []
    for key, values in params.items():
        if isinstance(values, (list, dict)):
            raise PlanError(f"hydra.sweeper.params: {key}: {values!r} is not a sweep (a "
                            f"{type(values).__name__}; a sweep is values separated by commas)")
        try:
            expand([f"{key}={values}"])
        except HydraException as exc:
            raise PlanError(f"hydra.sweeper.params: {key}: {values!r} is not a sweep "
                            f"({first_line(exc)})") from None
        overrides.append(f"{key}={values}")
    return overrides


def jobs(preset_body: dict) -> list[list[str]]:
    """The overrides of every job a preset expands to: the preset's own values (its
    defaults' group choices and its body, as the preset writes them), then each job of
    its sweep as `config.variants.expand` gives it, an `ablation.variant` replaced by that
    variant's assignments."""
    job_base = {key.removeprefix("override /"): value  # optimizer=..., task=...
                for d in preset_body.get("defaults", []) if isinstance(d, dict)
                for key, value in d.items() if key.startswith("override /")}
    job_base.update({k: yaml_value(v) for k, v in _flat(preset_body).items()})
    variants = preset_body.get("ablation", {}).get("variants", {})
    result = []
    for combination in expand(sweeps(preset_body)):
        job = dict(job_base)
        for assignment in combination:
            key, _, value = assignment.partition("=")
            if key == "ablation.variant" and value not in variants:
                raise PlanError(f"ablation.variant {value!r} is swept but not among "
                                f"ablation.variants ({', '.join(variants) or 'none'})")
            for setting in variants[value] if key == "ablation.variant" else [assignment]:
                key, _, value = setting.partition("=")
                job[key] = value
        result.append([f"{k}={v}" for k, v in job.items()])
    return result


def _flat(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if key in ("defaults", "hydra", "ablation") and not prefix:
            continue
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
