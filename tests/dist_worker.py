"""What each of the 2 gloo processes of tests/test_distributed.py runs (a module of its own:
the launcher's spawned workers import it by name)."""

from __future__ import annotations

import torch


def train_all(configs: dict, steps: int) -> dict[str, dict[str, torch.Tensor]]:
    """Each config trained `steps` steps on this rank; its parameters and losses."""
    import gc

    from ablate.train import Trainer

    gc.freeze()  # each Trainer's reset_peak collects garbage: not the imports' objects again
    out = {}
    for name, cfg in configs.items():
        trainer = Trainer(cfg)
        losses = [trainer.train_step().item() for _ in range(steps)]
        out[name] = {"params": {n: whole(p.detach()).clone() for n, p in
                                trainer.model.named_parameters()}, "losses": losses}
        if trainer.fused:
            trainer.optimizer.remove_hooks()
    return out


def whole(p: torch.Tensor) -> torch.Tensor:
    """A parameter as one tensor: a sharded one gathered from every rank."""
    return p.full_tensor() if hasattr(p, "full_tensor") else p
