"""Optimizer step inside backward, for any `torch.optim.Optimizer`.

Each parameter gets its own optimizer instance (of the configured class), stepped from the
parameter's post-accumulate-grad hook once its gradient is complete; the gradient is then
freed, so no full set of gradients ever exists. The instances run the same update as one
optimizer's `step()`; from outside they look like one optimizer (one `state_dict`, one list
of param groups), as in torchtune's `optimizer_in_bwd`.

With multi-tensor updates (`Base.multi_tensor`: `trainer.foreach`, on by default), the
parameters whose gradients complete together are updated together: one decoder layer's
(`model.layers.3.*`) when the last of its hooks fires, in one multi-tensor call
(`Base.update_many`, over the instances' parameters and states), their gradients then
freed at once. The parameters after the last layer (the final norm and the head, whose
gradients come first, one after the other) are one group; each other one outside the
numbered layers (the embedding) is a group of its own (`groups_of`). So at most one group's
gradients (one layer's, or the head's and the final norm's) are kept beyond those of the
per-parameter update. Each group's update starts cold (the backward's kernels have evicted
the interpreter's and torch's working set): a few tenths of a millisecond on a 2-core CPU,
which is what the fused path costs over the unfused one, hence groups as large as that
bound allows. A group some of whose parameters got no gradient is updated at the end of
`backward()` (its other gradients kept until then). A class without multi-tensor updates
steps each instance from its own hook, as with `foreach` off.

Data parallel, a hook hands its gradient to a `distributed.BucketedAllReduce` instead of
using it: the update runs when the gradient's bucket has been summed over the ranks, so
every rank steps on the same gradient, and what a gathering pass sums (the clipping norm,
AdaLomo's global sums) is taken over the summed gradients: global across ranks too.

Fully sharded (`trainer.sharding=fsdp`), FSDP's reduce-scatter sums each gradient over the
ranks and fires the hook on this rank's shard: each instance updates its shard, and what
a gathering pass sums is summed over the ranks once at its end.
"""

from __future__ import annotations

import weakref
from collections import Counter
from typing import Callable, Iterable

import torch

from .sharding import is_sharded, local, sum_over_shards


class OptimizerInBackward:
    """An optimizer whose update needs sums over every parameter before any parameter is
    updated (AdaLomo's global update normalization) says so with `needs_global_sums`; it
    gives its own part with `global_sums()` (from the present gradient, its state untouched)
    and reads the sum over all instances from its `global_totals` when it steps."""

    def __init__(self, named_params: Iterable[tuple[str, torch.nn.Parameter]],
                 make_optimizer: Callable[[list], torch.optim.Optimizer], reducer=None):
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        named_params = list(named_params)
        self._group_of = groups_of([name for name, _ in named_params])
        self._group_size = Counter(self._group_of.values())  # parameters per group
        self._complete: dict[str, list[str]] = {}  # per group: the names with a gradient
        self.reducer = reducer  # a BucketedAllReduce across ranks, or None
        self._handles = []
        self.accumulating = False  # True on micro-batches that only accumulate gradients
        self.clip_coef: torch.Tensor | None = None  # set by a gathering pass, used by the next
        self._gathering: str | None = None  # "norms" or "sums" during a gathering pass
        self._gathered: list[torch.Tensor] = []
        self._sharded = None  # a sharded parameter: a gathering pass sums over its ranks
        for name, p in named_params:
            if is_sharded(p):
                self._sharded = p
            self.optimizers[name] = make_optimizer([(name, p)])
            self._handles.append(p.register_post_accumulate_grad_hook(self._hook(name)))
        self._needing_sums = {name for name, opt in self.optimizers.items()
                              if getattr(opt, "needs_global_sums", False)}
        self.grouped = all(hasattr(opt, "multi_tensor") and opt.multi_tensor(
            [p for group in opt.param_groups for p in group["params"]])
            for opt in self.optimizers.values())

    def _hook(self, name: str):
        # The hook lives on the tensor, which autograd's garbage collector cannot see into:
        # a strong reference back to the optimizers (which hold the tensor) would leak both.
        owner = weakref.ref(self)

        def hook(p: torch.Tensor) -> None:
            self = owner()
            if self is None or self.accumulating:
                return
            if self.reducer is None:
                self._use(name, p)
            else:
                self.reducer.ready(p, lambda: self._use(name, p))
        return hook

    def _use(self, name: str, p: torch.Tensor) -> None:
        """What the present pass does with p's complete gradient, which it then frees."""
        if self._gathering == "norms":
            self._gathered.append(local(p.grad).detach().float().pow(2).sum())
        else:
            if self.clip_coef is not None:
                local(p.grad).mul_(self.clip_coef)
            if self._gathering is None and self.grouped:
                self._ready(name)
                return  # its gradient is freed with its group's
            if self._gathering is None:
                self.optimizers[name].step()
            elif name in self._needing_sums:
                self._gathered.append(self.optimizers[name].global_sums())
        p.grad = None

    def _ready(self, name: str) -> None:
        """Notes that `name`'s gradient is complete; its group's update runs when the last
        of the group's gradients is."""
        group = self._group_of[name]
        complete = self._complete.setdefault(group, [])
        complete.append(name)
        if len(complete) == self._group_size[group]:
            self._update_group(self._complete.pop(group))

    @torch.no_grad()
    def _update_group(self, names: list[str]) -> None:
        """One multi-tensor update of `names`' parameters, their gradients then freed."""
        optimizers = [self.optimizers[name] for name in names]
        entries = [entry for opt in optimizers for entry in opt.entries(opt.params_with_grads())]
        optimizers[0].update_many(entries)
        for p, _, _ in entries:
            p.grad = None

    def backward(self, loss: torch.Tensor, clip_grad_norm: float | None) -> None:
        """`loss.backward()` that updates every parameter (after any gathering passes), or
        only accumulates gradients while `accumulating`."""
        if not self.accumulating:
            self.gather(loss, clip_grad_norm)
        self._backward(loss)

    def _backward(self, loss: torch.Tensor, retain_graph: bool = False) -> None:
        loss.backward(retain_graph=retain_graph)
        if self.reducer is not None and not self.accumulating:
            self.reducer.finish()
        for group in list(self._complete):  # groups some of whose parameters had no gradient
            self._update_group(self._complete.pop(group))

    def gather(self, loss: torch.Tensor, clip_grad_norm: float | None) -> None:
        """What every update needs before any update, each from a backward that only
        gathers (the graph kept for the next): the global gradient norm for
        `clip_grad_norm`, then the optimizers' `global_sums`, which are computed from the
        clipped gradients and so need a backward of their own. Without either, nothing runs;
        with both, the updating backward is the third."""
        if clip_grad_norm is not None:
            total = self._gathering_pass(loss, "norms").sum().sqrt()
            self.clip_coef = torch.clamp(clip_grad_norm / (total + 1e-6), max=1.0)
        if self._needing_sums:
            totals = self._gathering_pass(loss, "sums")
            for name in self._needing_sums:
                self.optimizers[name].global_totals = totals

    def _gathering_pass(self, loss: torch.Tensor, what: str) -> torch.Tensor:
        self._gathering, self._gathered = what, []
        try:
            self._backward(loss, retain_graph=True)
            return sum_over_shards(self._sharded, torch.stack(self._gathered).sum(0))
        finally:
            self._gathering, self._gathered = None, []

    @property
    def param_groups(self) -> list[dict]:
        return [g for opt in self.optimizers.values() for g in opt.param_groups]

    @property
    def state(self) -> dict:
        return {p: s for opt in self.optimizers.values() for p, s in opt.state.items()}

    def state_dict(self) -> dict:
        return {name: opt.state_dict() for name, opt in self.optimizers.items()}

    def load_state_dict(self, state_dict: dict) -> None:
        for name, opt in self.optimizers.items():
            opt.load_state_dict(state_dict[name])

    def remove_hooks(self) -> None:
        for handle in self._handles:
            handle.remove()


def groups_of(names: list[str]) -> dict[str, str]:
    """Each parameter's group, from the parameters' names in the model's order: a numbered
    layer's (`layer_of`) one group, those after the last layer one group (named by the
    first of them), each other one a group of its own."""
    layers = {name: layer_of(name) for name in names}
    numbered = [i for i, name in enumerate(names) if layers[name] is not None]
    tail = names[numbered[-1] + 1:] if numbered else []
    groups = {name: layers[name] or name for name in names}
    groups.update((name, tail[0]) for name in tail)
    return groups


def layer_of(name: str) -> str | None:
    """A parameter's layer: its name up to its first number (one decoder layer:
    `model.layers.3`), or None when there is no number in it."""
    parts = name.split(".")
    numbered = next((i for i, part in enumerate(parts) if part.isdigit()), None)
    return None if numbered is None else ".".join(parts[:numbered + 1])
