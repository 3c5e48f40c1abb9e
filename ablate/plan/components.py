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
    # a toggle's value in the unablated optimizer (the schema's None); a mapping for a part
    # several optimizers share, {optimizer: value}
    on: object = None
    removed: object = None
    replacements: dict = field(default_factory=dict)  # plan's word -> config value
    number: type | None = None  # replacements are positive numbers of this type
    aliases: tuple = ()
    also: tuple = ()  # other optimizers that have this part under the same key

    @property
    def optimizers(self) -> tuple:
        return (self.optimizer, *self.also)

    def baseline(self, optimizer: str) -> object:
        """Its value in the unablated `optimizer`: an optimizer key's from conf/optimizer/,
        a toggle's `on`."""
        if self.key.startswith("optimizer."):
            return optimizer_defaults(optimizer)[self.key.removeprefix("optimizer.")]
        return self.on[optimizer] if isinstance(self.on, dict) else self.on

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
    # GaLore's, and APOLLO's under the same keys (a plan with an APOLLO-only part is APOLLO's)
    Component("projection", "galore_adamw", "toggles.projection",
              {"galore_adamw": "svd", "apollo": "random"}, removed="none",
              replacements={"random projection": "random", "random_projection": "random",
                            "random": "random", "pca": "pca", "svd": "svd"},
              aliases=("gradient projection", "low-rank projection",
                       "choice of projection matrices"), also=("apollo",)),
    Component("update_proj_gap", "galore_adamw", "optimizer.update_proj_gap", number=int,
              aliases=("subspace change frequency", "update frequency", "t"), also=("apollo",)),
    Component("rank", "galore_adamw", "optimizer.rank", number=int, aliases=(
        "projection rank", "rank"), also=("apollo",)),
    Component("scale", "galore_adamw", "optimizer.scale", number=float, aliases=(
        "scale factor", "alpha"), also=("apollo",)),
    Component("two_sided", "galore_adamw", "toggles.two_sided", False, replacements={
        "use both p and q": True, "both p and q": True, "two-sided": True, "both": True},
        aliases=("using only one projection matrix (p or q)", "number of projection matrices",
                 "one vs two projection matrices")),
    Component("eight_bit", "galore_adamw", "toggles.eight_bit", True, removed=False, aliases=(
        "8-bit optimizer",)),
    # Channel-wise against tensor-wise scaling; no "scaling" among its words: GaLore's scale
    # (alpha) owns them.
    Component("channel_wise", "apollo", "optimizer.scaling", replacements={
        "tensor-wise": "tensor", "tensor": "tensor", "channel-wise": "channel",
        "channel": "channel"}, aliases=(
        "channel-wise versus tensor-wise", "granularity", "channel-wise gradient")),
    Component("limiter", "apollo", "toggles.limiter", True, removed=False, aliases=(
        "norm-growth limiter", "norm growth limiter", "nl", "fira limiter")),
    Component("partition", "adam_mini", "toggles.partition", "head", replacements={
        "per head": "head", "head": "head", "per neuron": "neuron", "neuron": "neuron",
        "output neuron": "neuron", "per tensor": "tensor", "whole tensor": "tensor",
        "default pytorch partition": "tensor"}, aliases=(
        "partition", "parameter partition", "block partition", "hessian-based partition",
        "partition strategy")),
    Component("ns_steps", "muon", "optimizer.ns_steps", number=int, aliases=(
        "newton-schulz steps", "newton-schulz iterations", "ns steps",
        "orthogonalization iterations")),
    Component("nesterov", "muon", "toggles.nesterov", True, removed=False, aliases=(
        "nesterov momentum", "nesterov")),
]
