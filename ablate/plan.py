"""`python -m ablate.plan PLAN [--out FILE] [--dry-run]`: a planner's ablation plan as a preset.

A plan (the planner's Markdown, as the files in shared/planner-plans/ are, or JSONL with one
ablation per line) names components in its own words. One registry below maps those words
to config keys; every ablation becomes variants of one baseline, each changing one key.
The written preset (conf/ablation/NAME.yaml) sweeps `ablation.variant` x `trainer.seed`
(over `ablation.seeds`).
`--dry-run` prints one line per job: the overrides `python -m ablate` would need for it.
A preset file (.yaml) is accepted too, with --dry-run, to list the jobs it expands to.

How an ablated part's words find their component. Planners word a part many ways ("Adam-style
variance estimate", "the factored (Adafactor) state", "rank r of the projector"), so a part
and every alias in the registry become sets of tokens the same way:
  1. lower-cased; phrases that are one idea become one token (PHRASES: non-negative matrix
     factorization, factored, Adafactor -> nmf; variance, second-order moment -> second
     moment; 8-bit, eight bit -> 8bit; learning rate, step size -> lr; low-rank -> lowrank);
  2. split at everything but letters and digits (hyphens, apostrophes, underscores);
  3. stemmed (plural and common suffixes: -s, -ies, -ed, -ing, -ion, -ation, -ization, ...);
  4. synonyms to one token (SYNONYMS: projector, subspace -> proj; frequency, gap,
     interval, T -> gap; r -> rank; alpha -> scale; variance ...);
  5. fillers dropped (FILLERS: the, of, a, mechanism, method, component, the optimizers'
     names, ...).
Words in parentheses are extra evidence: they count when they match and are not held
against a component when they do not. A component's score is its best alias's weighted
Jaccard similarity between the alias and the part's words outside parentheses, where a word
of the part that another alias of the same component has also counts as a match:
    (W(alias & words) + W(outside & component's words - alias)) / W(alias | outside).
A token weighs 1 / (how many components use it), or 1 if none does: a token every GaLore
part shares ("proj") counts less than one that only one part has ("rank"). The best
component is taken when it scores at least ACCEPT and no other is within MARGIN of it. When
others are that close and the best scores at least ACCEPT - MARGIN, the part is ambiguous
and the error names the candidates; otherwise it is unknown and the error names every
component, closest first.
"""

from __future__ import annotations

import argparse
import difflib
import itertools
import json
import math
import re
import sys
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .config.schema import config_dir, register_configs


@dataclass(frozen=True)
class Component:
    """A part of an optimizer the planner may ablate: the config key that switches it, its
    value in the unablated optimizer, the value that removes it, the values that may replace
    it (words, or a number type: positive ints or positive floats), and its names."""

    name: str
    optimizer: str
    key: str
    baseline: object
    removed: object = None
    replacements: dict = field(default_factory=dict)  # plan's word -> config value
    number: type | None = None  # replacements are positive numbers of this type
    aliases: tuple = ()

    @property
    def words(self) -> tuple:
        """Every wording that names it: its name, aliases and replacement words."""
        return (self.name, *self.aliases, *self.replacements)


COMPONENTS = [
    Component("adaptive_lr", "adalomo", "toggles.adaptive_lr", True, removed=False, aliases=(
        "adaptive learning rate", "second moment", "second moment estimation")),
    Component("grouped_norm", "adalomo", "toggles.grouped_norm", True, removed=False,
              replacements={"global": "global", "global normalization": "global",
                            "global update normalization": "global", "grouped": True},
              aliases=(
        "grouped update normalization", "update normalization", "normalization")),
    Component("nmf", "adalomo", "toggles.nmf", True, removed=False, aliases=(
        "non-negative matrix factorization", "factored second moment")),
    Component("projection", "galore_adamw", "toggles.projection", "svd", removed="none",
              replacements={"random projection": "random", "random_projection": "random",
                            "random": "random", "pca": "pca", "svd": "svd"},
              aliases=("gradient projection", "low-rank projection",
                       "choice of projection matrices")),
    Component("update_proj_gap", "galore_adamw", "optimizer.update_proj_gap", 200, number=int,
              aliases=("subspace change frequency", "update frequency", "t")),
    Component("rank", "galore_adamw", "optimizer.rank", 128, number=int, aliases=(
        "projection rank", "rank")),
    Component("scale", "galore_adamw", "optimizer.scale", 0.25, number=float, aliases=(
        "scale factor", "alpha")),
    Component("two_sided", "galore_adamw", "toggles.two_sided", False, replacements={
        "use both p and q": True, "both p and q": True, "two-sided": True, "both": True},
        aliases=("using only one projection matrix (p or q)", "number of projection matrices",
                 "one vs two projection matrices")),
    Component("eight_bit", "galore_adamw", "toggles.eight_bit", True, removed=False, aliases=(
        "8-bit optimizer",)),
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

PHRASES = [  # (regex, token): several words that are one idea, rewritten before splitting
    (r"non[- ]?negative matrix factori[sz]ations?|adafactor|factori[sz](ation|ed)|factored",
     "nmf"),
    (r"singular value decomposition", "svd"),
    (r"principal component analysis", "pca"),
    (r"(8|eight)[- ]?bits?|int8|quanti[sz](ed|ation)", "8bit"),
    (r"learning[- ]rates?|step[- ]sizes?", "lr"),
    (r"low[- ]rank", "lowrank"),
    (r"second[- ]order moments?|variances?", "second moment"),
]
SYNONYMS = {  # word -> the token it counts as (both stemmed)
    "projector": "proj", "projection": "proj", "subspace": "proj",
    "frequency": "gap", "interval": "gap", "period": "gap", "every": "gap", "t": "gap",
    "change": "update", "refresh": "update", "switch": "update", "recompute": "update",
    "normalization": "norm", "rms": "norm",
    "r": "rank", "dimension": "rank",
    "alpha": "scale",
    "estimation": "estimate", "estimator": "estimate",
    "matrices": "matrix",
    "one": "side", "two": "side", "both": "side", "single": "side", "number": "side",
    "choice": "choose", "type": "choose", "kind": "choose", "selection": "choose",
}
FILLERS = set("""the a an of in on for to with and or vs versus its their by from as s
    mechanism method component part module technique strategy approach scheme style based
    use using used only optimizer optimiser state effect role
    adalomo lomo galore adam adamw sgd""".split())
MAX_SEEDS = 1000  # every seed is a training run per variant: more is a typo
ACCEPT = 0.6  # the least score that names a component
MARGIN = 0.15  # a runner-up this close makes the part ambiguous

SUFFIXES = ("izations", "isations", "ization", "isation", "ations", "ation", "ivity", "ions",
            "ion", "izing", "ising", "ized", "ised", "izes", "ises", "ize", "ise", "ings",
            "ing", "ives", "ive", "ed", "es", "e", "s")


def stem(word: str) -> str:
    """The word without its plural or a common suffix (at least three letters are kept)."""
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    for suffix in SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[:-len(suffix)]
    return word


_SYNONYMS = {stem(word): stem(token) for word, token in SYNONYMS.items()}
_FILLERS = {stem(word) for word in FILLERS}


def tokens(words: str) -> set[str]:
    """A wording's meaning as a set of tokens (the module docstring's steps 1 to 5)."""
    text = str(words).lower().replace("_", " ")
    for pattern, token in PHRASES:
        text = re.sub(rf"\b({pattern})\b", f" {token} ", text)
    result = set()
    for word in re.findall(r"[a-z0-9]+", text):
        token = _SYNONYMS.get(stem(word), stem(word))
        if token not in _FILLERS:
            result.add(token)
    return result


@cache
def _vocabulary() -> tuple[dict, dict]:
    """Each component's aliases as token sets, and each token's weight."""
    aliases = {c.name: [tokens(words) for words in c.words] for c in COMPONENTS}
    users: dict = {}
    for name, sets in aliases.items():
        for token in set().union(*sets):
            users[token] = users.get(token, 0) + 1
    return aliases, {token: 1 / count for token, count in users.items()}


def scores(part: str) -> dict[str, float]:
    """Every component's score for a wording (the module docstring's rule)."""
    aliases, weight = _vocabulary()
    inside = tokens(" ".join(re.findall(r"\(([^()]*)\)", part)))
    outside = tokens(re.sub(r"\([^()]*\)", " ", part)) or inside
    words = outside | inside

    def weighed(found: set) -> float:
        return sum(weight.get(token, 1.0) for token in found)

    result = {}
    for name, sets in aliases.items():
        own = set().union(*sets)
        result[name] = max((weighed(alias & words) + weighed((outside & own) - alias))
                           / weighed(alias | outside) for alias in sets)
    return result


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
    "- **Replacement**:" (a list below it, or comma-separated on its line) and
    "- **Metrics**:" lines; the rest is ignored."""
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
            replacement=fields.get("replacement list") or [
                word.strip() for word in fields.get("replacement", "").split(",") if word.strip()],
            metrics=[m.strip() for m in fields.get("metrics", "").split(",") if m.strip()]))
    return ablations


JSONL_FIELDS = {"name": str, "ablated_part": str, "action": str, "replacement": list,
                "metrics": list}


def parse_jsonl(text: str) -> list[Ablation]:
    ablations = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise PlanError(f"line {number}: not JSON ({exc.msg} at column {exc.colno}); "
                            "each line must be one JSON object") from None
        if not isinstance(row, dict):
            raise PlanError(f"line {number}: {line.strip()[:40]!r} is a JSON "
                            f"{type(row).__name__}; each line must be one JSON object")
        unknown = [key for key in row if key not in JSONL_FIELDS]
        if unknown:
            raise PlanError(f"line {number}: unknown key {unknown[0]!r} (allowed: "
                            f"{', '.join(JSONL_FIELDS)})")
        missing = [key for key in ("name", "ablated_part", "action") if key not in row]
        if missing:
            raise PlanError(f"line {number}: missing {', '.join(missing)} (need name, "
                            "ablated_part, action; replacement for REPLACE; metrics)")
        for key, kind in JSONL_FIELDS.items():
            value = row.get(key, kind())
            items = value if isinstance(value, list) else [value]
            if not isinstance(value, kind) or not all(isinstance(x, (str, int, float))
                                                      for x in items):
                raise PlanError(f"line {number}: {key} is {value!r}; it must be a " + (
                    "string" if kind is str else "list of strings or numbers"))
        ablations.append(Ablation(row["name"], row["ablated_part"], row["action"].upper(),
                                  row.get("replacement", []), row.get("metrics", [])))
    return ablations


def component_for(part: str) -> Component:
    """The component a wording names (the module docstring's rule), or a PlanError naming
    the candidates."""
    score = scores(part)
    by_name = {c.name: c for c in COMPONENTS}
    closeness = {c.name: max(difflib.SequenceMatcher(None, normalize(part), a).ratio()
                             for a in c.words) for c in COMPONENTS}
    ranked = sorted(by_name, key=lambda name: (score[name], closeness[name]), reverse=True)
    best = score[ranked[0]]
    close = [name for name in ranked if score[name] >= best - MARGIN]
    if best >= ACCEPT and len(close) == 1:
        return by_name[ranked[0]]
    if best >= ACCEPT - MARGIN and len(close) > 1:
        raise PlanError(f"ambiguous ablated part {part!r}: it fits " + ", ".join(
            f"{name} ({score[name]:.2f})" for name in close) + "; name one of them")
    why = "" if tokens(part) else " (it has no word but fillers and optimizer names)"
    raise PlanError(f"unknown ablated part {part!r}{why}; known components, closest first: "
                    f"{', '.join(ranked)}")


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
        "defaults": [{"override /optimizer": optimizers[0]}],
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


def jobs(preset_body: dict) -> list[list[str]]:
    """The overrides of every job a preset expands to (the sweeper's cartesian product, each
    `ablation.variant` replaced by its assignments)."""
    register_configs()  # the sweeps' ${sweep_values:...}
    try:
        node = OmegaConf.select(OmegaConf.create(preset_body), "hydra.sweeper.params")
        params = {} if node is None else OmegaConf.to_container(node, resolve=True)
    except OmegaConfBaseException as exc:
        raise PlanError(f"hydra.sweeper.params: {str(exc).splitlines()[0]}") from None
    parser = OverridesParser.create()
    axes = []
    for key, values in params.items():
        try:
            (override,) = parser.parse_overrides([f"{key}={values}"])
            axes.append([f"{key}={v}" for v in override.sweep_string_iterator()])
        except HydraException as exc:
            raise PlanError(f"hydra.sweeper.params: {key}: {values!r} is not a sweep "
                            f"({str(exc).splitlines()[0]})") from None
    job_base = {key.removeprefix("override /"): value  # optimizer=..., task=...
                for d in preset_body.get("defaults", []) if isinstance(d, dict)
                for key, value in d.items() if key.startswith("override /")}
    job_base.update({k: yaml_value(v) for k, v in _flat(preset_body).items()})
    variants = preset_body.get("ablation", {}).get("variants", {})
    result = []
    for combination in itertools.product(*axes):
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


def read(path: str) -> tuple[str, str]:
    """The plan's text and a name for its preset (from the file name)."""
    file = Path(path)
    if path != "-" and not file.is_file():
        raise PlanError(f"plan {path!r}: " + ("a directory, not a file" if file.is_dir()
                                              else "no such file"))
    try:
        text = sys.stdin.read() if path == "-" else file.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        text = "\0"
    except OSError as exc:
        raise PlanError(f"plan {path!r}: cannot read it ({exc.strerror})") from None
    if "\0" in text:
        raise PlanError(f"plan {path!r}: not a text file (a plan is Markdown or JSONL, or a "
                        "preset .yaml)")
    if path == "-":
        return text, "plan_stdin"
    stem = re.sub(r"[^0-9A-Za-z]+", "_", file.stem).strip("_") or "plan"
    return text, f"plan_{stem.split('_')[0]}" if stem[:1].isdigit() else stem


PRESET_SECTIONS = {"defaults": list, "hydra": dict, "hydra.sweeper": dict,
                   "hydra.sweeper.params": dict, "ablation": dict, "ablation.variants": dict}


def read_preset(text: str, path: str) -> dict:
    """A preset .yaml's body, checked to be a mapping as `jobs` reads it."""
    try:
        body = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise PlanError(f"{path} is not valid YAML ({getattr(exc, 'problem', None) or exc}"
                        f"{where})") from None
    if not isinstance(body, dict):
        raise PlanError(f"{path} is not a preset: a YAML mapping with hydra.sweeper.params "
                        f"is expected, not a {type(body).__name__}")
    for section, kind in PRESET_SECTIONS.items():
        node = body
        for key in section.split("."):
            node = node.get(key, kind())
        if not isinstance(node, kind):
            raise PlanError(f"{path}: {section} is {node!r}; it must be a {kind.__name__}")
    for variant, assignments in body.get("ablation", {}).get("variants", {}).items():
        if not isinstance(assignments, list) or not all(
                isinstance(a, str) and "=" in a for a in assignments):
            raise PlanError(f"{path}: ablation.variants.{variant} is {assignments!r}; it "
                            "must be a list of key=value")
    return body


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


def seed_count(text: str) -> int:
    if not re.fullmatch(r"\+?\d+", text.strip()) or not 1 <= int(text) <= MAX_SEEDS:
        raise argparse.ArgumentTypeError(f"{text!r}: must be an integer from 1 to {MAX_SEEDS}")
    return int(text)


class Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one line and exit status 1, as every bad input."""

    def error(self, message: str):
        sys.exit(f"ablate.plan: error: {message}")


def main(argv: list[str] | None = None) -> None:
    parser = Parser(prog="python -m ablate.plan", description=__doc__,
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("plan", help="plan file (.md/.txt Markdown, .jsonl), a preset .yaml "
                                     "(with --dry-run), or - for standard input")
    parser.add_argument("--out", help="preset to write, a .yaml file (default "
                                      "conf/ablation/NAME.yaml)")
    parser.add_argument("--name", help="preset name (default from the plan's file name)")
    parser.add_argument("--seeds", type=seed_count, default=3,
                        help=f"seeds per variant (default 3, at most {MAX_SEEDS})")
    parser.add_argument("--dry-run", action="store_true",
                        help="print one line per job (its overrides) and write nothing")
    args = parser.parse_args(argv)
    if args.name is not None and not re.fullmatch(r"[A-Za-z0-9_-]+", args.name):
        parser.error(f"argument --name: {args.name!r}: letters, digits, _ and - only "
                     "(it names conf/ablation/NAME.yaml)")
    if args.out is not None and not re.fullmatch(r"[A-Za-z0-9_-]+\.yaml", Path(args.out).name):
        parser.error(f"argument --out: {args.out!r}: a preset is NAME.yaml, NAME of letters, "
                     "digits, _ and - (it is +ablation=NAME)")
    is_preset = args.plan.endswith((".yaml", ".yml"))
    if is_preset and not args.dry_run:
        parser.error(f"{args.plan} is a preset already: add --dry-run to list its jobs")
    try:
        text, name = read(args.plan)
        notes = []
        if is_preset:
            body = read_preset(text, args.plan)
        else:
            ablations = (parse_jsonl(text) if args.plan.endswith(".jsonl")
                         or text.lstrip().startswith("{") else parse_markdown(text))
            body, notes = preset(ablations, args.name or name, args.seeds)
        if args.dry_run:
            lines = [" ".join(job) for job in jobs(body)]
        else:
            out = Path(args.out or config_dir() / "ablation" / f"{body['ablation']['name']}.yaml")
            write(body, out, args.plan)
    except PlanError as exc:
        sys.exit(f"ablate.plan: error: {exc}")
    for note in notes:
        print(f"# {note}", file=sys.stderr)
    if body.get("ablation", {}).get("not_measured"):
        print(f"# not measured by the tasks here: "
              f"{', '.join(body['ablation']['not_measured'])}", file=sys.stderr)
    if args.dry_run:
        print("\n".join(lines))
    else:
        print(f"wrote {out}: python -m ablate -m +ablation={out.stem}", file=sys.stderr)


if __name__ == "__main__":
    main()
