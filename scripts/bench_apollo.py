"""Our Apollo (fused into backward) against apollo-torch's APOLLOAdamW (stepped after
backward), side by side in one process (scripts/paired_bench.py): TGS ratio and state
bytes, for APOLLO (channel-wise, rank 128) and APOLLO-Mini (tensor-wise, rank 1). The
projection is drawn every T = 200 steps (a Gaussian matrix per weight, in both): the
timed steps are steady ones. Ends with one line of JSON.

    .venv/bin/python scripts/bench_apollo.py [--models llama_20m llama_60m] [--steps 8]
"""

from __future__ import annotations

import argparse
import json
import zlib

import torch
from apollo_torch import APOLLOAdamW
from bench_galore import Clock
from paired_bench import report, run_pairs

import ablate.optim.apollo
from ablate.config.variants import compose


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["llama_20m", "llama_60m"])
    parser.add_argument("--steps", type=int, default=8, help="timed steps (pairs)")
    parser.add_argument("--threads", type=int, default=1, help="torch compute threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    clocks = [Clock(), Clock()]
    clocks[0].patch(ablate.optim.apollo.Apollo, "_update", "optimizer")
    clocks[1].patch(APOLLOAdamW, "step", "optimizer")
    results = {}
    for model in args.models:
        for optimizer in ("apollo", "apollo_mini"):
            cfg = compose([f"optimizer={optimizer}", f"model={model}", "trainer.batch_size=4",
                           "trainer.seq_len=256", "trainer.device=cpu",
                           "trainer.schedule=constant", "trainer.warmup_steps=0",
                           "trainer.max_steps=1000000", "logger.wandb.mode=disabled"])
            name = f"{model} {optimizer}"
            results[name] = run_pairs(cfg, reference_optimizer, clocks, args.steps)
            report(name, results[name])
    print(json.dumps({"batch": "4x256", "device": "cpu", "threads": args.threads,
                      "results": results}))


if __name__ == "__main__":
    main()
