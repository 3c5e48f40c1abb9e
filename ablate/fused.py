"""Optimizer step inside backward, for any `torch.optim.Optimizer`.

Each parameter gets its own optimizer instance (of the configured class), stepped from the
parameter's post-accumulate-grad hook as soon as its gradient is complete; the gradient is
freed at once, so no full set of gradients ever exists. The instances run the same
per-tensor update as one optimizer's `step()`; from outside they look like one optimizer
(one `state_dict`, one list of param groups), as in torchtune's `optimizer_in_bwd`.
"""

from __future__ import annotations

import weakref
from typing import Callable, Iterable

import torch


class OptimizerInBackward:
    def __init__(self, named_params: Iterable[tuple[str, torch.nn.Parameter]],
                 make_optimizer: Callable[[list], torch.optim.Optimizer]):
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self._handles = []
        self.accumulating = False  # True on micro-batches that only accumulate gradients
        self.clip_coef: torch.Tensor | None = None  # set by the norm pass, used by the next
        self._sq_norms: list[torch.Tensor] | None = None  # collecting during a norm pass
        for name, p in named_params:
            self.optimizers[name] = make_optimizer([(name, p)])
            self._handles.append(p.register_post_accumulate_grad_hook(self._hook(name)))

    def _hook(self, name: str):
        # The hook lives on the tensor, which autograd's garbage collector cannot see into:
        # a strong reference back to the optimizers (which hold the tensor) would leak both.
        owner = weakref.ref(self)

        def hook(p: torch.Tensor) -> None:
            self = owner()
            if self is None or self.accumulating:
                return
            if self._sq_norms is not None:
                self._sq_norms.append(p.grad.detach().float().pow(2).sum())
            else:
                if self.clip_coef is not None:
                    p.grad.mul_(self.clip_coef)
                self.optimizers[name].step()
            p.grad = None
        return hook

    def norm_pass(self, loss: torch.Tensor, max_norm: float) -> torch.Tensor:
        """Global gradient-norm clipping needs the norm before any update: a first backward
        only gathers it (the graph is kept for the second, updating backward)."""
        self._sq_norms = []
        loss.backward(retain_graph=True)
        total = torch.stack(self._sq_norms).sum().sqrt()
        self._sq_norms = None
        self.clip_coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)
        return total

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
