"""What each of the 2 gloo processes of tests/test_sharding.py runs (a module of its own:
the launcher's spawned workers import it by name)."""

from __future__ import annotations

from pathlib import Path

import torch


def train_all(configs: dict, steps: int, save: tuple[str, str] | None = None
              ) -> dict[str, dict[str, torch.Tensor]]:
    """Each config trained `steps` steps on this rank; its parameters, losses and optimizer
    state's bytes (this rank's shards, if sharded). `save`:
    (a config's name, a folder): that model is then saved there as a job saves it (sharded,
    every rank gives its shards and rank 0 writes). The corpus of a task is loaded once
    (~0.15 s a Trainer): every rank reads it whole, whatever the process count."""
    import gc

    from ablate.memory import optimizer_state_bytes
    from ablate.tasks import pretrain
    from ablate.train import Trainer

    gc.freeze()  # each Trainer's reset_peak collects garbage: not the imports' objects again
    load_corpus, corpora = pretrain.load_corpus, {}

    def corpus_once(task, pretrained=None):
        key = (str(task), pretrained)
        if key not in corpora:
            corpora[key] = load_corpus(task, pretrained)
        return corpora[key]

    out = {}
    pretrain.load_corpus = corpus_once
    try:
        for name, cfg in configs.items():
            trainer = Trainer(cfg)
            losses = [trainer.train_step().item() for _ in range(steps)]
            out[name] = {"params": {n: whole(p.detach()).clone() for n, p in
                                    trainer.model.named_parameters()}, "losses": losses,
                         "state": optimizer_state_bytes(trainer.optimizer)}
            if save is not None and save[0] == name:
                trainer.save_model(None if trainer.world.rank else Path(save[1]))
            if trainer.fused:
                trainer.optimizer.remove_hooks()
    finally:
        pretrain.load_corpus = load_corpus
    return out


def whole(p: torch.Tensor) -> torch.Tensor:
    """A parameter as one tensor: a sharded one gathered from every rank."""
    return p.full_tensor() if hasattr(p, "full_tensor") else p
