"""Our AdamMini (fused into backward) against the adam-mini package's Adam_mini (stepped
after backward), side by side in one process (scripts/paired_bench.py): TGS ratio and state
bytes. Ends with one line of JSON.

    .venv/bin/python scripts/bench_adam_mini.py [--models llama_20m llama_60m] [--steps 8]
"""

from __future__ import annotations

import torch
from adam_mini import Adam_mini
from paired_bench import main

from ablate.optim import AdamMini


def reference_optimizer(model: torch.nn.Module, cfg) -> Adam_mini:
    o = cfg.optimizer
    return Adam_mini(model.named_parameters(), lr=cfg.trainer.lr, betas=tuple(o.betas),
                     eps=o.eps, weight_decay=o.weight_decay, dim=cfg.model.hidden_size,
                     n_heads=cfg.model.num_heads, verbose=False)


if __name__ == "__main__":
    main(__doc__, ["adam_mini"], reference_optimizer, (AdamMini, "update_many"),
         (Adam_mini, "step"))
