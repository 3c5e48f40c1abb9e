"""`python -m ablate.plan PLAN [--out FILE] [--dry-run]`: a planner's ablation plan as a preset.

A plan (the planner's Markdown, as the files in shared/planner-plans/ are, or JSONL with one
ablation per line) names components in its own words. One registry below maps those words
to config keys; every ablation becomes variants of one baseline, each changing one key.
The written preset (conf/ablation/NAME.yaml) sweeps `ablation.variant` x `trainer.seed`.
`--dry-run` prints one line per job: the overrides `python -m ablate` would need for it.
A preset file (.yaml) is accepted too, to list the jobs it expands to.
"""

from __future__ import annotations

import argparse
import difflib
import itertools
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser

from .config import config_dir


@dataclass(frozen=True)
class Component:
    """A part of an optimizer the planner may ablate: the config key that switches it, its
    value in the unablated optimizer, the value that removes it, and replacement spellings."""

    name: str
    optimizer: str
    key: str
    baseline: object
    removed: object = None
    replacements: dict = field(default_factory=dict)  # plan's word -> config value
    aliases: tuple = ()


COMPONENTS = [
    Component("adaptive_lr", "adalomo", "toggles.adaptive_lr", True, removed=False, aliases=(
        "adaptive learning rate", "adaptive learning rate mechanism",
        "adaptive learning rate mechanism (second-order moment estimation)",
        "second-order moment estimation", "second moment estimation")),
    Component("grouped_norm", "adalomo", "toggles.grouped_norm", True, removed=False, aliases=(
        "grouped update normalization", "grouped normalization", "update normalization")),
    Component("nmf", "adalomo", "toggles.nmf", True, removed=False, aliases=(
        "non-negative matrix factorization", "nmf", "factorization",
        "factored second moment")),
    Component("projection", "galore_adamw", "toggles.projection", "svd", removed="none",
              aliases=("gradient projection mechanism", "gradient projection",
                       "low-rank projection")),
    Component("projection_method", "galore_adamw", "toggles.projection", "svd", replacements={
        "random projection": "random", "random_projection": "random", "random": "random",
        "pca": "pca", "svd": "svd"}, aliases=(
        "choice of projection matrices", "gradient projection method (svd)",
        "gradient projection method", "projection method", "projection matrix type")),
    Component("update_proj_gap", "galore_adamw", "optimizer.update_proj_gap", 200, aliases=(
        "subspace change frequency", "subspace change frequency (t)", "update frequency",
        "projection update gap", "t")),
    Component("rank", "galore_adamw", "optimizer.rank", 128, aliases=(
        "rank of projection", "projection rank (r)", "projection rank", "rank", "r")),
    Component("scale", "galore_adamw", "optimizer.scale", 0.25, aliases=(
        "scale factor (alpha)", "scale factor", "alpha", "scale")),
    Component("two_sided", "galore_adamw", "toggles.two_sided", False, replacements={
        "use both p and q": True, "both p and q": True, "two-sided": True, "both": True},
        aliases=("using only one projection matrix (p or q)", "one projection matrix",
                 "number of projection matrices", "one vs two projection matrices")),
    Component("eight_bit", "galore_adamw", "toggles.eight_bit", True, removed=False, aliases=(
        "8-bit optimizers", "8-bit optimizer", "8-bit adam", "8-bit", "eight-bit")),
]

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


class PlanError(ValueError):
    """A plan that cannot become a preset; the message says what and what is known."""


@dataclass
class Ablation:
    name: str
    part: str
    action: str  # REMOVE | REPLACE
    replacement: list
    metrics: list


def normalize(words: str) -> str:
    return re.sub(r"\s+", " ", str(words)).strip().strip(".:*").lower()


def parse_markdown(text: str) -> list[Ablation]:
    """The "### name" blocks with "- **Ablated Part**:", "- **Action**:",
    "- **Replacement**:" (a list) and "- **Metrics**:" lines; the rest is ignored."""
    ablations = []
    for block in re.split(r"^###\s+", text, flags=re.M)[1:]:
        name, _, body = block.partition("\n")
        fields, current = {}, None
        for line in body.splitlines():
            match = re.match(r"\s*-\s*\*\*(.+?)\*\*\s*:\s*(.*)", line)
            if match:
                current = normalize(match[1])
                fields[current] = match[2].strip()
            elif current == "replacement" and re.match(r"\s+-\s+\S", line):
                fields.setdefault("replacement list", []).append(line.strip()[1:].strip())
            elif line.strip().startswith("<") or line.startswith("#"):
                break
        if "ablated part" not in fields:
            continue
        ablations.append(Ablation(
            name=name.strip(), part=fields["ablated part"],
            action=fields.get("action", "").upper(),
            replacement=fields.get("replacement list", []),
            metrics=[m.strip() for m in fields.get("metrics", "").split(",") if m.strip()]))
    return ablations


def parse_jsonl(text: str) -> list[Ablation]:
    ablations = []
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            row = json.loads(line)
            try:
                ablations.append(Ablation(row["name"], row["ablated_part"],
                                          row["action"].upper(), row.get("replacement", []),
                                          row.get("metrics", [])))
            except KeyError as exc:
                raise PlanError(f"line {number}: missing {exc} (need name, ablated_part, "
                                "action; replacement for REPLACE; metrics)") from None
    return ablations


def component_for(part: str) -> Component:
    wanted = normalize(part)
    for component in COMPONENTS:
        if wanted == component.name or wanted in component.aliases:
            return component
    closeness = {c.name: max(difflib.SequenceMatcher(None, wanted, a).ratio()
                             for a in (c.name, *c.aliases)) for c in COMPONENTS}
    known = sorted(closeness, key=closeness.get, reverse=True)
    raise PlanError(f"unknown ablated part {part!r}; known components, closest first: "
                    f"{', '.join(known)}")


def value_for(component: Component, word: str):
    """A replacement word as a config value: one of the component's spellings, or a number."""
    if normalize(word) in component.replacements:
        return component.replacements[normalize(word)]
    for number in (int, float):
        try:
            return number(word)
        except ValueError:
            pass
    allowed = ", ".join(component.replacements) or "numbers"
    raise PlanError(f"replacement {word!r} for {component.name}: allowed are {allowed}")


def yaml_value(value) -> str:
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def preset(ablations: list[Ablation], name: str, seeds: int) -> tuple[dict, list[str]]:
    """The preset for a plan, and its header comment lines (mapping and unmeasured metrics)."""
    if not ablations:
        raise PlanError("the plan has no ablation (no '### name' block with an Ablated Part)")
    chosen = [(ablation, component_for(ablation.part)) for ablation in ablations]
    optimizers = sorted({c.optimizer for _, c in chosen})
    if len(optimizers) > 1:
        raise PlanError(f"the plan ablates parts of {' and '.join(optimizers)}: import each "
                        "optimizer's ablations as a plan of its own")
    baseline = {c.key: c.baseline for _, c in chosen}
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
            if value == component.baseline:
                continue  # the baseline job already runs it
            assignment = f"{component.key}={yaml_value(value)}"
            if assignment not in (a for v in variants.values() for a in v):
                label = (f"no_{component.name}" if ablation.action == "REMOVE"
                         else f"{component.name}_{yaml_value(value)}")
                variants[label] = [assignment]
        notes.append(f"{ablation.name}: {ablation.part!r} -> {component.key} "
                     f"({ablation.action.lower()})")
        not_measured += [m for m in ablation.metrics
                         if normalize(m) not in MEASURED and m not in not_measured]
    body = {
        "defaults": [{"override /optimizer": optimizers[0]}],
        **_nested(baseline),  # the composed config is the baseline; variants change one key
        "ablation": {"name": name, "baseline": [f"{k}={yaml_value(v)}" for k, v in baseline.items()],
                     "variants": variants, "not_measured": not_measured},
        "hydra": {"sweeper": {"params": {
            "ablation.variant": ",".join(variants),
            "trainer.seed": ",".join(str(s) for s in range(seeds))}}},
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


def jobs(preset_body: dict) -> list[list[str]]:
    """The overrides of every job a preset expands to (the sweeper's cartesian product, each
    `ablation.variant` replaced by its assignments)."""
    params = preset_body.get("hydra", {}).get("sweeper", {}).get("params", {})
    parser = OverridesParser.create()
    axes = []
    for key, values in params.items():
        (override,) = parser.parse_overrides([f"{key}={values}"])
        axes.append([f"{key}={v}" for v in override.sweep_string_iterator()])
    job_base = {"optimizer": d["override /optimizer"] for d in preset_body.get("defaults", [])
                if isinstance(d, dict) and "override /optimizer" in d}
    job_base.update({k: yaml_value(v) for k, v in _flat(preset_body).items()})
    variants = preset_body.get("ablation", {}).get("variants", {})
    result = []
    for combination in itertools.product(*axes):
        job = dict(job_base)
        for assignment in combination:
            key, _, value = assignment.partition("=")
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


def read(path: str) -> tuple[str, str]:
    """The plan's text and a name for its preset (from the file name)."""
    if path == "-":
        return sys.stdin.read(), "plan_stdin"
    file = Path(path)
    stem = re.sub(r"[^0-9A-Za-z]+", "_", file.stem).strip("_")
    return file.read_text(), f"plan_{stem.split('_')[0]}" if stem[:1].isdigit() else stem


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ablate.plan", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("plan", help="plan file (.md/.txt Markdown, .jsonl), a preset .yaml, "
                                     "or - for standard input")
    parser.add_argument("--out", help="preset to write (default conf/ablation/NAME.yaml)")
    parser.add_argument("--name", help="preset name (default from the plan's file name)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per variant (default 3)")
    parser.add_argument("--dry-run", action="store_true",
                        help="print one line per job (its overrides) and write nothing")
    args = parser.parse_args(argv)
    try:
        text, name = read(args.plan)
        if args.plan.endswith((".yaml", ".yml")):
            body = yaml.safe_load(text)
        else:
            ablations = (parse_jsonl(text) if args.plan.endswith(".jsonl")
                         or text.lstrip().startswith("{") else parse_markdown(text))
            body, notes = preset(ablations, args.name or name, args.seeds)
            for note in notes:
                print(f"# {note}", file=sys.stderr)
            if body["ablation"]["not_measured"]:
                print(f"# not measured by the tasks here: "
                      f"{', '.join(body['ablation']['not_measured'])}", file=sys.stderr)
    except (OSError, PlanError, ValueError) as exc:
        sys.exit(f"ablate.plan: error: {exc}")
    if args.dry_run:
        for job in jobs(body):
            print(" ".join(job))
        return
    out = Path(args.out or config_dir() / "ablation" / f"{body['ablation']['name']}.yaml")
    header = f"# @package _global_\n# Imported from {args.plan} by python -m ablate.plan\n"
    out.write_text(header + yaml.safe_dump(body, sort_keys=False))
    print(f"wrote {out}: python -m ablate -m +ablation={out.stem}", file=sys.stderr)


if __name__ == "__main__":
    main()
