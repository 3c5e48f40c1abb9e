"""Jobs as variants: grouped by their mapping (config key -> value), never by their label;
the keys every variant shares, each variant's short label, and the baseline."""

from __future__ import annotations

import yaml

from ..config.identity import label, short_key
from .read import Job


def by_variant(jobs: list[Job]) -> dict[str, list[Job]]:
    """The jobs of each variant, by its key, in job order."""
    groups: dict[str, list[Job]] = {}
    for job in jobs:
        groups.setdefault(job.key, []).append(job)
    return groups


def common_parts(variants: list[dict]) -> dict:
    """The keys with the same value in every variant, with that value."""
    first, *rest = variants
    return {k: v for k, v in first.items() if all(k in other and other[k] == v for other in rest)}


def short_label(variant: dict, common: dict) -> str:
    """The variant's label without the keys all variants share (the optimizer name stays
    when nothing else is left)."""
    own = {k: v for k, v in variant.items() if k not in common}
    return label(own or {"optimizer": variant["optimizer"]})


def comparable(key: str, value) -> tuple[str, object]:
    """A variant's key and value as a `--baseline` part names them: the key without its
    `toggles.`/`optimizer.` prefix, as labels show it, and a string value read as a number
    where it is one, so that `1e-3` matches `0.001`."""
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            pass
    return short_key(key), value


def spec_part(part: str) -> tuple[str, object]:
    """A `--baseline` part (`nmf=false`, `lr=1e-3`, or an optimizer name) as (key, value),
    the value read as YAML, so that `false` matches False."""
    key, sep, text = part.partition("=")
    if not sep:
        return "optimizer", part
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        value = text
    return comparable(key, value)


def match_baseline(variants: list[dict], spec: str) -> dict:
    """The variant that has every part of `spec` (fewest other keys wins a tie)."""
    wanted = [spec_part(p) for p in spec.split()]
    matches = [v for v in variants
               if all(w in [comparable(k, value) for k, value in v.items()] for w in wanted)]
    fewest = [v for v in matches if len(v) == min(len(m) for m in matches)]
    if len(fewest) != 1:
        found = "no variant" if not matches else f"{len(matches)} variants equally"
        raise SystemExit(f"ablate.report: error: --baseline {spec!r} matches {found}; "
                         "variants: " + " | ".join(map(label, variants)))
    return fewest[0]


def find_baseline(jobs: list[Job], spec: str | None) -> tuple[dict, str]:
    """The baseline variant, and how it was found."""
    if spec:
        variants = list({job.key: job.variant for job in jobs}.values())
        return match_baseline(variants, spec), f"given: --baseline {spec!r}"
    marked = [job for job in jobs if job.summary.get("is_baseline")]
    if marked:
        return marked[0].variant, "the preset's baseline (is_baseline in summary.json)"
    return jobs[0].variant, f"the lowest-numbered job's (`{jobs[0].dir}`)"
