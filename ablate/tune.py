"""Per-variant learning-rate tuning: the grid runs on one seed, the chosen lr on every seed.

`+tune=lr` sweeps `trainer.lr_factor` over `tune.lr_factors`: the schedule peaks at
`trainer.lr x lr_factor`, so each optimizer's grid is centred on its own recommended lr.
Jobs of `tune.grid_seed` run at every factor. A job of any other seed first reads its
variant's grid (the same config at the grid seed and each factor, found by config hash in
the sweep directory and wherever resume looks) and runs only at the factor with the lowest
validation loss; at every other factor it is recorded `skipped`. The report chooses the
same way and shows test metrics at the chosen lr.

Why the grid on one seed: a grid of G factors costs G + S - 1 jobs per variant instead of
G x S, and validation and test are different splits, so the seed that chose the lr is not
scored on the data it chose on. A job that finds its grid incomplete (the grid seed comes
later in the sweep, a parallel launcher has not finished it, a grid job failed) runs
anyway: it never uses a wrong lr, it only costs the unchosen one.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

from omegaconf import DictConfig

from .config.identity import config_hash
from .runstore import find_outcomes


def grid_loss(summary: dict | None) -> float | None:
    """A grid point's validation loss: a diverged or stalled run's is inf, a missing or
    failed one's is unknown (None)."""
    if summary is None or summary["status"] not in ("completed", "stalled", "diverged"):
        return None
    return float(summary["val_loss"]) if summary["status"] == "completed" else math.inf


def best_factor(losses: dict[float, float]) -> float | None:
    """The factor with the lowest validation loss (the smaller factor on a tie); None when
    every run diverged or gave NaN."""
    finite = {f: loss for f, loss in losses.items() if math.isfinite(loss)}
    return min(finite, key=lambda f: (finite[f], f)) if finite else None


def edge(chosen: float, factors: list[float]) -> str | None:
    """'largest' or 'smallest' when the chosen factor is at that end of a grid of 2+."""
    if len(set(factors)) < 2:
        return None
    return "largest" if chosen == max(factors) else "smallest" if chosen == min(factors) else None


def decide(cfg: DictConfig, roots: list[Path]) -> tuple[bool, dict]:
    """Whether this job runs, and what its summary records of the tuning (`tuning`)."""
    t = cfg.tune
    factors = [float(f) for f in t.lr_factors]
    info = {"grid_seed": t.grid_seed, "lr_factors": factors}
    if cfg.trainer.seed == t.grid_seed:
        return True, {**info, "role": "grid"}
    hashes = {}
    for factor in factors:
        point = copy.deepcopy(cfg)
        point.trainer.seed, point.trainer.lr_factor = t.grid_seed, factor
        hashes[factor] = config_hash(point)
    outcomes = find_outcomes(roots, set(hashes.values()))
    losses = {f: loss for f, h in hashes.items()
              if (loss := grid_loss(outcomes.get(h))) is not None}
    missing = [f for f in factors if f not in losses]
    if missing:
        return True, {**info, "role": "grid incomplete", "missing": missing}
    chosen = best_factor(losses)
    info.update(val_losses={str(f): loss for f, loss in losses.items()}, chosen=chosen)
    if chosen is None:
        return False, {**info, "role": "skipped",
                       "reason": f"tuning: every lr_factor diverged on seed {t.grid_seed}"}
    if cfg.trainer.lr_factor != chosen:
        return False, {**info, "role": "skipped", "reason": (
            f"tuning: lr_factor={cfg.trainer.lr_factor:g} is not chosen (lr_factor={chosen:g} "
            f"has the lowest validation loss on seed {t.grid_seed})")}
    return True, {**info, "role": "chosen"}
