"""The optimizer parts a plan may ablate, and their values in the unablated optimizer."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache

import yaml

from ..config.schema import config_dir


@cache
def optimizer_defaults(name: str) -> dict:
    """conf/optimizer/NAME.yaml: the optimizer's own values."""
    return yaml.safe_load((config_dir() / "optimizer" / f"{name}.yaml").read_text())


@dataclass(frozen=True)
class Component:
    """A part of an optimizer the planner may ablate: the config key that switches it, a
    toggle's value when the part is on, the value that removes it, the values that may replace
    it (words, or a number type: positive ints or positive floats), and its names."""

    name: str
    optimizer: str
    key: str
    on: object = None  # a toggle's value in the unablated optimizer (the schema's None)
    removed: object = None
    replacements: dict = field(default_factory=dict)  # plan's word -> config value
    number: type | None = None  # replacements are positive numbers of this type
    aliases: tuple = ()

    @property
    def baseline(self) -> object:
        """Its value in the unablated optimizer: an optimizer key's from conf/optimizer/, a
        toggle's `on`."""
        if self.key.startswith("optimizer."):
            return optimizer_defaults(self.optimizer)[self.key.removeprefix("optimizer.")]
        return self.on

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
    Component("update_proj_gap", "galore_adamw", "optimizer.update_proj_gap", number=int,
              aliases=("subspace change frequency", "update frequency", "t")),
    Component("rank", "galore_adamw", "optimizer.rank", number=int, aliases=(
        "projection rank", "rank")),
    Component("scale", "galore_adamw", "optimizer.scale", number=float, aliases=(
        "scale factor", "alpha")),
    Component("two_sided", "galore_adamw", "toggles.two_sided", False, replacements={
        "use both p and q": True, "both p and q": True, "two-sided": True, "both": True},
        aliases=("using only one projection matrix (p or q)", "number of projection matrices",
                 "one vs two projection matrices")),
    Component("eight_bit", "galore_adamw", "toggles.eight_bit", True, removed=False, aliases=(
        "8-bit optimizer",)),
]
