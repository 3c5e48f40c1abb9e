"""A plan's text: the planner's Markdown or JSONL as ablations, and a preset's YAML."""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..errors import PlanError
from .words import normalize


@dataclass
class Ablation:
    name: str
    part: str
    action: str  # REMOVE | REPLACE
    replacement: list
    metrics: list


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


def parse_claim(text: str) -> dict:
    """`--claim 'VARIANT EXPECT AGAINST [MARGIN]'` as a claim of `ablation.claims`
    (its names and expectation are checked against the preset by config/claims.py)."""
    words = text.split()
    if len(words) not in (3, 4):
        raise PlanError(f"--claim {text!r}: expected 'VARIANT EXPECT AGAINST [MARGIN]', e.g. "
                        "'no_adaptive_lr worse baseline' or 'rank_4 equivalent baseline 0.05'")
    claim = {"variant": words[0], "against": words[2], "expect": words[1]}
    if len(words) == 4:
        try:
            claim["margin"] = float(words[3])
        except ValueError:
            raise PlanError(f"--claim {text!r}: margin {words[3]!r} is not a number") from None
    return claim


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
