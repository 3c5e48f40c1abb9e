"""Our Apollo (fused into backward) against apollo-torch's APOLLOAdamW (stepped after
backward), side by side in one process (scripts/paired_bench.py): TGS ratio and state
bytes, for APOLLO (channel-wise, rank 128) and APOLLO-Mini (tensor-wise, rank 1). The
projection is drawn every T = 200 steps (a Gaussian matrix per weight, in both): the
timed steps are steady ones. Ends with one line of JSON.

    .venv/bin/python scripts/bench_apollo.py [--models llama_20m llama_60m] [--steps 8]
"""

from __future__ import annotations

import zlib

import torch
from apollo_torch import APOLLOAdamW
from paired_bench import main

from ablate.optim import Apollo


def reference_optimizer(model: torch.nn.Module, cfg) -> APOLLOAdamW:
    """Param groups as the APOLLO repository builds them: the nn.Linear weights of attention
    and MLP modules projected, everything else plain AdamW; each projected weight's first
    random seed set to ours (it seeds by position, ours by name), so both draw the same."""
    names = {id(p): name for name, p in model.named_parameters()}
    projected = [m.weight for name, m in model.named_modules()
                 if isinstance(m, torch.nn.Linear) and ("attn" in name or "mlp" in name)]
    rest = [p for p in model.parameters() if not any(p is q for q in projected)]
    o = cfg.optimizer
    optimizer = APOLLOAdamW(
        [{"params": rest},
         {"params": projected, "rank": o.rank, "update_proj_gap": o.update_proj_gap,
          "scale": o.scale, "proj_type": "std", "proj": "random",
          "scale_type": o.scaling.value}],
        lr=cfg.trainer.lr, betas=tuple(o.betas), eps=o.eps, weight_decay=o.weight_decay)
    for p in projected:
        optimizer.state[p]["seed"] = zlib.crc32(f"{o.seed}/{names[id(p)]}".encode())
    return optimizer


if __name__ == "__main__":
    main(__doc__, ["apollo", "apollo_mini"], reference_optimizer, (Apollo, "_update"),
         (APOLLOAdamW, "step"))
