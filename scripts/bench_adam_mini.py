"""Our AdamMini (fused into backward) against the adam-mini package's Adam_mini (stepped
after backward), side by side in one process (scripts/paired_bench.py): TGS ratio and state
bytes. Ends with one line of JSON.

    .venv/bin/python scripts/bench_adam_mini.py [--models llama_20m llama_60m] [--steps 8]
"""

from __future__ import annotations

import argparse
import json

import torch
from adam_mini import Adam_mini
from bench_galore import Clock
from paired_bench import report, run_pairs

import ablate.optim.adam_mini
from ablate.config.variants import compose


def reference_optimizer(model: torch.nn.Module, cfg) -> Adam_mini:
    o = cfg.optimizer
    return Adam_mini(model.named_parameters(), lr=cfg.trainer.lr, betas=tuple(o.betas),
                     eps=o.eps, weight_decay=o.weight_decay, dim=cfg.model.hidden_size,
                     n_heads=cfg.model.num_heads, verbose=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["llama_20m", "llama_60m"])
    parser.add_argument("--steps", type=int, default=8, help="timed steps (pairs)")
    parser.add_argument("--threads", type=int, default=1, help="torch compute threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    clocks = [Clock(), Clock()]
    clocks[0].patch(ablate.optim.adam_mini, "adam_mini", "optimizer")
    clocks[1].patch(Adam_mini, "step", "optimizer")
    results = {}
    for model in args.models:
        cfg = compose(["optimizer=adam_mini", f"model={model}", "trainer.batch_size=4",
                       "trainer.seq_len=256", "trainer.device=cpu", "trainer.schedule=constant",
                       "trainer.warmup_steps=0", "trainer.max_steps=1000000",
                       "logger.wandb.mode=disabled"])
        results[model] = run_pairs(cfg, reference_optimizer, clocks, args.steps)
        report(model, results[model])
    print(json.dumps({"batch": "4x256", "device": "cpu", "threads": args.threads,
                      "results": results}))


if __name__ == "__main__":
    main()
