"""A preset's claims (`ablation.claims`): what it expects of its variants, as data, checked
before any compute; the report judges them (ablate/report/claims.py).

A claim is a mapping: `variant` and `against` name variants of the preset (a key of
`ablation.variants`, or `baseline`: the preset's baseline); `expect` is one of EXPECTS;
`margin` (in the metric's units, > 0) is required by `equivalent` and `not_worse`;
`metric` is a summary field of METRICS (default `test_loss`), compared in the direction
METRICS gives (`worse` is a higher loss, a lower accuracy).
"""

from __future__ import annotations

import math

from ..errors import ConfigError

# What a claim can expect of `variant` against `against`.
EXPECTS = ("worse", "better", "equivalent", "not_worse")
NEEDS_MARGIN = ("equivalent", "not_worse")
# The summary fields a claim can compare, and whether a higher value is better.
METRICS = {"test_loss": False, "test_perplexity": False, "val_loss": False,
           "final_train_loss": False, "test_accuracy": True, "glue_score": True,
           "peak_memory_gb": False, "optimizer_state_gb": False, "tgs": True}
KEYS = ("variant", "against", "expect", "margin", "metric")


def check_claims(claims: list, variants: list[str]) -> None:
    """Each claim of a preset whose variants are `variants` (`baseline` names its baseline):
    one ConfigError line for the first bad one."""
    names = list(dict.fromkeys(["baseline", *variants]))
    for i, claim in enumerate(claims):
        where = f"ablation.claims[{i}]"
        if not isinstance(claim, dict):
            raise ConfigError(f"{where}={claim!r}: must be a mapping {{variant, against, "
                              "expect[, margin, metric]}")
        unknown = [key for key in claim if key not in KEYS]
        if unknown:
            raise ConfigError(f"{where}.{unknown[0]}: unknown key (allowed: {', '.join(KEYS)})")
        for key in ("variant", "against"):
            if claim.get(key) not in names:
                raise ConfigError(f"{where}.{key}={claim.get(key)}: not a variant of the preset "
                                  f"(allowed: {', '.join(names)})")
        if claim["variant"] == claim["against"]:
            raise ConfigError(f"{where}: variant and against are both {claim['variant']} "
                              "(a claim compares two variants)")
        if claim.get("expect") not in EXPECTS:
            raise ConfigError(f"{where}.expect={claim.get('expect')}: allowed are "
                              f"{', '.join(EXPECTS)}")
        if claim.get("metric", "test_loss") not in METRICS:
            raise ConfigError(f"{where}.metric={claim['metric']}: allowed are "
                              f"{', '.join(METRICS)}")
        margin = claim.get("margin")
        if claim["expect"] in NEEDS_MARGIN and not (
                type(margin) in (int, float) and 0 < margin < math.inf):
            raise ConfigError(f"{where}.margin={margin}: expect={claim['expect']} needs a "
                              "margin > 0 (finite, in the metric's units)")
        if claim["expect"] not in NEEDS_MARGIN and margin is not None:
            raise ConfigError(f"{where}.margin={margin}: only {' and '.join(NEEDS_MARGIN)} "
                              "take a margin")
