"""A plan's ablations as a preset: one baseline, a variant per changed value."""

from __future__ import annotations

import math
import re
from pathlib import Path

import yaml

from ..errors import PlanError
from .components import Component
from .parse import Ablation
from .words import component_for, normalize

# What the tasks measure, by the words plans use; anything else is listed as not measured.
MEASURED = {
    "loss": "test_loss", "perplexity": "test_perplexity",
    "pre-training perplexity": "test_perplexity", "model_performance": "test_perplexity",
    "model performance": "test_perplexity", "accuracy": "test_accuracy",
    "memory (gb)": "peak_memory_gb", "memory usage": "peak_memory_gb",
    "memory_usage": "peak_memory_gb", "total memory": "peak_memory_gb",
    "optimizer memory": "optimizer_state_gb", "throughput (tgs)": "tgs", "throughput": "tgs",
    "tgs": "tgs", "convergence rate": "report: steps to target loss, loss-curve area",
}


def value_for(component: Component, word) -> object:
    """A replacement word as a config value: one of the component's words, or a positive
    number of its type."""
    text = normalize(word)
    if text in component.replacements:
        return component.replacements[text]
    if component.number is int and re.fullmatch(r"\+?\d+", text) and int(text) > 0:
        return int(text)
    if component.number is float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if math.isfinite(value) and value > 0:
            return value
    allowed = (", ".join(component.replacements) if component.replacements
               else {int: "positive integers", float: "positive numbers"}.get(
                   component.number, "none (REMOVE it instead)"))
    raise PlanError(f"replacement {word!r} for {component.name} ({component.key}): "
                    f"allowed are {allowed}")


def yaml_value(value) -> str:
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def preset(ablations: list[Ablation], name: str, seeds: int) -> tuple[dict, list[str]]:
    """The preset for a plan, and its header comment lines (mapping and unmeasured metrics)."""
    if not ablations:
        raise PlanError("the plan has no ablation (no '### name' block with an Ablated Part, "
                        "no JSONL line)")
    chosen = [(ablation, component_for(ablation.part)) for ablation in ablations]
    # The optimizer every part belongs to: a part GaLore and APOLLO share is GaLore's unless
    # another part is APOLLO's alone.
    shared = set.intersection(*(set(c.optimizers) for _, c in chosen))
    if not shared:
        optimizers = sorted({c.optimizer for _, c in chosen})
        raise PlanError(f"the plan ablates parts of {' and '.join(optimizers)}: import each "
                        "optimizer's ablations as a plan of its own")
    optimizer = next(o for _, c in chosen for o in c.optimizers if o in shared)
    baseline = {c.key: c.baseline(optimizer) for _, c in chosen}
    variants, notes, not_measured = {"baseline": []}, [], []
    for ablation, component in chosen:
        if ablation.action == "REMOVE":
            values = [component.removed]
        elif ablation.action == "REPLACE" and ablation.replacement:
            values = [value_for(component, word) for word in ablation.replacement]
        else:
            raise PlanError(f"{ablation.name}: action {ablation.action!r} (allowed: REMOVE, "
                            "or REPLACE with a Replacement list)")
        if component.removed is None and ablation.action == "REMOVE":
            raise PlanError(f"{ablation.name}: {component.name} cannot be removed, only "
                            "replaced (REPLACE with values)")
        for value in values:
            if value == component.baseline(optimizer):
                continue  # the baseline job already runs it
            assignment = f"{component.key}={yaml_value(value)}"
            if assignment not in (a for v in variants.values() for a in v):
                label = (f"no_{component.name}" if value == component.removed
                         else f"{component.name}_{yaml_value(value)}")
                variants[label] = [assignment]
        notes.append(f"{ablation.name}: {ablation.part!r} -> {component.name}: "
                     f"{component.key} ({ablation.action.lower()})")
        not_measured += [m for m in map(str, ablation.metrics)
                         if normalize(m) not in MEASURED and m not in not_measured]
    if len(variants) == 1:
        raise PlanError("every replacement in the plan is the baseline's value "
                        f"({', '.join(f'{k}={yaml_value(v)}' for k, v in baseline.items())}): "
                        "there is nothing to compare")
    body = {
        "defaults": [{"override /optimizer": optimizer}],
        **_nested(baseline),  # the composed config is the baseline; variants change one key
        "ablation": {"name": name, "seeds": list(range(seeds)),
                     "baseline": [f"{k}={yaml_value(v)}" for k, v in baseline.items()],
                     "variants": variants, "not_measured": not_measured},
        "hydra": {"sweeper": {"params": {  # the seed first, as every preset (for +tune=lr)
            "trainer.seed": "${sweep_values:${ablation.seeds}}",
            "ablation.variant": ",".join(variants)}}},
    }
    return body, notes


def _nested(flat: dict) -> dict:
    tree: dict = {}
    for key, value in flat.items():
        node = tree
        *parents, leaf = key.split(".")
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = value
    return tree


def write(body: dict, out: Path, source: str) -> None:
    """The preset as YAML; a file there that this tool did not write is never replaced."""
    header = f"# @package _global_\n# Imported from {source} by python -m ablate.plan\n"
    try:
        if out.is_file() and "by python -m ablate.plan" not in out.read_text(errors="replace"):
            raise PlanError(f"{out} exists and is not an imported plan: choose another "
                            "--name or --out")
        out.write_text(header + yaml.safe_dump(body, sort_keys=False))
    except OSError as exc:
        raise PlanError(f"cannot write {out}: {exc.strerror}") from None
