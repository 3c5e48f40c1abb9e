"""Peak memory and tokens per second of a few training steps of one job, through the trainer.

    python scripts/train_steps.py [--steps 6] [--warmup 2] OVERRIDES...

OVERRIDES are `python -m ablate`'s: the job is composed and checked as that command would
do it, and the Trainer builds it (model, task, optimizer, fused backward, precision,
activation checkpointing). The peak (ablate.memory: `max_memory_allocated` on CUDA, the peak
RSS on CPU) is reset once the trainer is built, so that a job in bf16 weights does not count
its fp32 initialisation (the weights are made in fp32 and rounded: ablate.models): it is the
training's peak, printed beside the estimate (ablate.estimate). TGS: the tokens of the steps
after the first `--warmup` over their wall seconds, each step ended by a synchronize.

scripts/gpu_check.sh runs it for LLaMA-7B with AdaLomo in bf16 weights with activation
checkpointing on a token batch of 512, beside LOMO's Table 2 (13.61 GB and 769.92 TGS on
one RTX 3090).
"""

from __future__ import annotations

import argparse
import time

import torch

from ablate.config.check import checked
from ablate.config.variants import compose
from ablate.estimate import estimate, label
from ablate.memory import GB, peak_bytes, reset_peak
from ablate.train import Trainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, as `python -m ablate`")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=2, help="first steps, not timed")
    args = parser.parse_args()
    if not 0 <= args.warmup < args.steps:
        parser.error(f"--warmup {args.warmup} must be below --steps {args.steps}")
    cfg = checked(compose(args.overrides))
    gb = estimate(cfg).gb()
    began = time.perf_counter()
    trainer = Trainer(cfg)
    trainer.sync()
    built = time.perf_counter() - began
    reset_peak(trainer.device)
    seconds, losses = [], []
    for _ in range(args.steps):
        began = time.perf_counter()
        losses.append(trainer.train_step())
        trainer.sync()
        seconds.append(time.perf_counter() - began)
    peak = peak_bytes(trainer.device) / GB
    timed = seconds[args.warmup:]
    where = (torch.cuda.get_device_name(trainer.device) if trainer.device.type == "cuda"
             else f"cpu, {torch.get_num_threads()} threads")
    print(f"{label(cfg)}, batch {cfg.trainer.batch_size} x {cfg.trainer.seq_len}, {where}")
    print(f"  {trainer.params_m:.0f}M parameters, built in {built:.1f} s; step seconds "
          + " ".join(f"{s:.3f}" for s in seconds) + f"; loss {losses[0]:.3f} -> {losses[-1]:.3f}")
    print(f"  peak memory {peak:.2f} GB since built (GB = 1e9 bytes); estimate "
          f"{gb['total']:.2f} GB (" + ", ".join(f"{k} {gb[k]:.3f}" for k in (
              "weights", "gradients", "optimizer_state", "activations"))
          + f"); estimate error {100 * (gb['total'] - peak) / peak:+.1f}%")
    print(f"  TGS {trainer.tokens_per_step * len(timed) / sum(timed):.1f} (tokens per second "
          f"over steps {args.warmup + 1}-{args.steps})")


if __name__ == "__main__":
    main()
