"""What every optimizer here shares: `step(closure)` and the parameters it updates, state
created at a parameter's first step by one method, a `load_state_dict` that keeps each state
tensor's dtype, and the checks of the hyper-parameters they have in common."""

from __future__ import annotations

from typing import Iterator

import torch
from torch import Tensor
from torch.optim import Optimizer

from ..sharding import is_sharded


def check_hyperparameters(*, lr: float, weight_decay: float, eps: float | None = None,
                          betas: tuple[float, float] | None = None,
                          momentum: float | None = None, clip_grad_norm: float | None = None,
                          clip_grad_value: float | None = None,
                          loss_scale: float | None = None) -> None:
    """One-line ValueErrors naming the value, for those given (None: the optimizer has none,
    or, for the clipping thresholds, does not clip)."""
    if not lr >= 0.0:
        raise ValueError(f"lr={lr}: must be >= 0")
    if betas is not None and (len(betas) != 2 or not all(0.0 <= beta < 1.0 for beta in betas)):
        raise ValueError(f"betas={list(betas)}: must be two numbers in [0, 1)")
    if eps is not None and not eps >= 0.0:
        raise ValueError(f"eps={eps}: must be >= 0")
    if momentum is not None and not 0.0 <= momentum < 1.0:
        raise ValueError(f"momentum={momentum}: must be in [0, 1)")
    if not weight_decay >= 0.0:
        raise ValueError(f"weight_decay={weight_decay}: must be >= 0")
    if clip_grad_norm is not None and not clip_grad_norm > 0.0:
        raise ValueError(f"clip_grad_norm={clip_grad_norm}: must be > 0 or None")
    if clip_grad_value is not None and not clip_grad_value > 0.0:
        raise ValueError(f"clip_grad_value={clip_grad_value}: must be > 0 or None")
    if loss_scale is not None and not loss_scale > 0.0:
        raise ValueError(f"loss_scale={loss_scale}: must be > 0")


def named(group: dict):
    """(name, parameter) pairs of a group; unnamed parameters are called `<i>`."""
    names = group.get("param_names") or [f"<{i}>" for i in range(len(group["params"]))]
    return zip(names, group["params"])


def name_of(p: Tensor, group: dict) -> str:
    """The name of `p` in its group (as `named` calls it)."""
    return next(name for name, q in named(group) if q is p)


class Base(Optimizer):
    """An optimizer here implements `_update(params)`, its update of the parameters that
    have a gradient, which `step()` calls after the closure; one that keeps state creates a
    parameter's state at its first step in `init_state(p, group)`, which its update calls and
    which the memory estimator calls on the meta device to count the tensors it creates.
    Each updates a parameter's shard of rows exactly (`trainer.sharding=fsdp`); what it
    computes there and communicates, its docstring says.

    One with a multi-tensor form of its math (torch's `foreach` ops over lists of tensors,
    as `torch.optim.AdamW(foreach=True)`) implements `update_many(entries)`, the same update
    of (parameter, group, state) entries that may come from several instances of its class
    (the fused backward's groups), so it reads no `self.state`; `step()` uses it over all
    parameters while `foreach` (`trainer.foreach`) is on. The per-tensor `_update` stays
    the reference, and what `foreach=False` runs; and for a class whose `update_many` does
    not update shards as `_update` does (`foreach_shards`), what sharded parameters take."""

    update_many = None  # or the multi-tensor update (see above)
    foreach_shards = False  # whether update_many's update of a shard equals _update's
    foreach = True  # step() with update_many, when there is one (trainer.foreach)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        params = self.params_with_grads()
        if self.multi_tensor([p for _, p, _ in params]):
            self.update_many(self.entries(params))
        else:
            self._update(params)
        return loss

    def multi_tensor(self, params: list[Tensor]) -> bool:
        """Whether `update_many` updates `params` (see above)."""
        return self.foreach and self.update_many is not None and (
            self.foreach_shards or not any(is_sharded(p) for p in params))

    def entries(self, params: list[tuple[str, Tensor, dict]]) -> list[tuple[Tensor, dict, dict]]:
        """(parameter, group, state) of `params`, each state created if it is the first step:
        what `update_many` takes."""
        return [(p, group, self.init_state(p, group)) for _, p, group in params]

    def params_with_grads(self) -> list[tuple[str, Tensor, dict]]:
        """(name, parameter, group) for each parameter that has a gradient, in group order."""
        return [(name, p, group) for group in self.param_groups for name, p in named(group)
                if p.grad is not None]

    def init_state(self, p: Tensor, group: dict) -> dict:
        """The state of `p`, created at its first step: none unless an optimizer keeps some."""
        return self.state[p]

    def check_sharding(self, ranks: int) -> None:
        """ValueError naming a parameter whose state cannot be sharded by rows over `ranks`
        (the config check asks before any compute): none, unless an optimizer says."""

    def kept_whole(self, p: Tensor, group: dict, key: str) -> bool:
        """Whether every rank of a sharded job keeps the state tensor `key` of `p` whole
        rather than its rows (`sharding.state_zeros`' `by_rows=False`; the estimator counts
        it so): no, unless an optimizer says. A 0-d tensor (a step count) is whole anyway."""
        return False

    def gathers(self, p: Tensor, group: dict) -> bool:
        """Whether the update of `p` all-gathers a matrix of `p`'s size on a sharded job (the
        estimator counts the largest): no, unless an optimizer says."""
        return False

    def load_state_dict(self, state_dict: dict) -> None:
        """`Optimizer.load_state_dict`, which casts every floating state tensor (and GaLore's
        uint8 codes) to its parameter's dtype, then each state tensor replaced by a copy of
        the saved one, as saved: 8-bit codes stay uint8, and a bf16-weights checkpoint keeps
        its fp32 moments unrounded, so a resumed run is the uninterrupted one."""
        super().load_state_dict(state_dict)
        params = dict(zip((i for group in state_dict["param_groups"] for i in group["params"]),
                          (p for group in self.param_groups for p in group["params"])))
        for index, saved in state_dict["state"].items():
            state = self.state[params[index]]
            for key, value in saved.items():
                if torch.is_tensor(value):
                    state[key] = value.to(state[key].device, copy=True)


# Values per slice of an elementwise update on a CPU: 2 MB of fp32, so that a batch's lists
# (AdamW: parameters, gradients, two moments, a temporary) stay in a server CPU's L3 cache.
# None: whole tensors, as on a GPU (scripts/bench_fused.py counts a GPU's ops this way).
CHUNK: int | None = 1 << 19


def elementwise_batches(written: list[list[Tensor]], read: list[list[Tensor]]
                        ) -> Iterator[list[list[Tensor]]]:
    """Lists of tensors that an update combines element by element, alike in shape (`written`:
    parameters and moments, updated in place, so contiguous; `read`: gradients), in batches
    of at most CHUNK values per list, the written lists first. On a CPU a foreach op is a
    loop over its tensors, so an update of k ops passes over memory k times, and its
    temporaries (AdamW's sqrt(v)) are as large as all the parameters: allocated anew every
    step, their pages faulted in again. In batches it reads memory about once and its
    temporaries are a batch's, bit for bit the same numbers (AdamW's step on llama_60m:
    0.4-0.5 of torch's foreach step). A tensor of more than CHUNK values comes as aligned
    flat slices, the others whole (flattening and cutting each tensor took 10% of
    llama_tiny's step). A GPU's foreach kernels chunk their tensors themselves: there, the
    lists whole."""
    if CHUNK is None or written[0][0].device.type != "cpu":
        yield written + read
        return
    batch, total = [], 0
    for row in zip(*written, *read):
        pieces = [row]
        if row[0].numel() > CHUNK:
            flat = ([t.view(-1) for t in row[:len(written)]]
                    + [t.reshape(-1) for t in row[len(written):]])
            pieces = zip(*(t.split(CHUNK) for t in flat))
        for piece in pieces:
            if batch and total + piece[0].numel() > CHUNK:
                yield [list(column) for column in zip(*batch)]
                batch, total = [], 0
            batch.append(piece)
            total += piece[0].numel()
    if batch:
        yield [list(column) for column in zip(*batch)]


def by_group(entries: list[tuple], *state_keys: str) -> list[list[tuple]]:
    """Entries (parameter, group, state, ...) split by their groups' hyperparameters and
    the values of `state_keys` (a step count), in their order: one multi-tensor call per
    bucket, whose scalars are then the same for all its tensors. Instances of one class
    built alike share their hyperparameters: a fused group is one bucket."""
    buckets: list[tuple[dict, tuple, list]] = []  # (first group, step counts, entries)
    for entry in entries:
        group, steps = entry[1], tuple(float(entry[2][k]) for k in state_keys)
        bucket = next((found for first, counts, found in buckets
                       if counts == steps and alike(first, group)), None)
        if bucket is None:
            buckets.append((group, steps, [entry]))
        else:
            bucket.append(entry)
    return [found for _, _, found in buckets]


def alike(group: dict, other: dict) -> bool:
    """Whether two param groups have the same hyperparameters: each value the same object
    (instances built from one config share them), or else printed alike."""
    return group is other or (group.keys() == other.keys() and all(
        group[key] is other[key] or repr(group[key]) == repr(other[key])
        for key in group if key not in ("params", "param_names")))
