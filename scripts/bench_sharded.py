"""Fully sharded (`trainer.sharding=fsdp`) against replicated data parallel, at N=2 on CPU:
each rank's peak memory rise and the step time, both measured in one run, with the
estimate (ablate.estimate) beside each peak.

    python scripts/bench_sharded.py [--model llama_60m] [--optimizer adamw] [--fused true]
        [--batch-size 1] [--seq-len 128] [--steps 2] [--rounds 3]

Two gloo processes, one CPU thread each, on the trainer's own `train_step`. Memory: each
layout alone (built, trained `--steps` steps, freed), its peak RSS rise over the RSS before
it was built (`memory.reset_peak`; blocks of 1 MB or more mapped on their own, so freed
memory leaves the RSS), on every rank. Time: both layouts alive, taking turns
round by round so that other load slows both alike (the first round is a warm-up); a step
takes as long as its slower rank.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import os
import statistics
import time

import torch
import torch.distributed as dist

from ablate import distributed
from ablate.config.variants import compose

LAYOUTS = ("none", "fsdp")
M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number


def bench(args) -> dict | None:
    from unittest import mock

    from ablate.estimate import estimate
    from ablate.memory import allocated_bytes, peak_bytes, reset_peak
    from ablate.tasks.pretrain import load_corpus
    from ablate.train import Trainer

    torch.set_num_threads(1)
    # glibc maps every block of 1 MB or more on its own, so that freed memory leaves the RSS
    # at once and the peak follows the memory in use (as scripts/check_estimate.py)
    ctypes.CDLL(None).mallopt(M_MMAP_THRESHOLD, 1 << 20)
    cpu = torch.device("cpu")
    configs = {layout: compose([
        f"model={args.model}", f"optimizer={args.optimizer}", "trainer.device=cpu",
        f"toggles.fused_backward={args.fused}", f"trainer.batch_size={args.batch_size}",
        f"trainer.seq_len={args.seq_len}", "trainer.processes=2", "trainer.warmup_steps=0",
        f"trainer.sharding={layout}", "logger.wandb.mode=disabled"]) for layout in LAYOUTS}
    corpus = load_corpus(configs["none"].task)  # loaded once: not in either layout's rise
    # also before both: the estimates build the model on the meta device, which imports
    # transformers' model code (ablate/models.py imports it where a model is made: ~100 MB
    # that would count in the first layout's rise alone)
    estimates = [estimate(configs[layout]).total for layout in LAYOUTS]
    with mock.patch("ablate.tasks.pretrain.load_corpus", lambda task, pretrained=None: corpus):
        rise = {}
        for layout in LAYOUTS:
            reset_peak(cpu)
            start = allocated_bytes(cpu)
            trainer = Trainer(configs[layout])
            for _ in range(args.steps):
                trainer.train_step()
            rise[layout] = peak_bytes(cpu) - start
            if trainer.fused:
                trainer.optimizer.remove_hooks()
            del trainer
            gc.collect()
        trainers = {layout: Trainer(configs[layout]) for layout in LAYOUTS}
    times: dict[str, list[float]] = {layout: [] for layout in LAYOUTS}
    for round_ in range(args.rounds + 1):
        for layout in LAYOUTS[round_ % 2:] + LAYOUTS[:round_ % 2]:
            dist.barrier()
            began = time.perf_counter()
            for _ in range(args.steps):
                trainers[layout].train_step()
            if round_:
                times[layout].append((time.perf_counter() - began) / args.steps)
    slowest, peaks = {}, torch.tensor([rise[layout] for layout in LAYOUTS], dtype=torch.float64)
    for layout, values in times.items():
        t = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        slowest[layout] = t.tolist()
    every = [torch.zeros_like(peaks) for _ in range(dist.get_world_size())]
    dist.all_gather(every, peaks)
    if dist.get_rank():
        return None
    return {"times": slowest, "peaks": [p.tolist() for p in every], "load": os.getloadavg(),
            "estimates": estimates,
            "params_m": trainers["none"].params_m}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="llama_60m")
    parser.add_argument("--optimizer", default="adamw")
    parser.add_argument("--fused", default="true", choices=("true", "false"))
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    load_before = os.getloadavg()
    result = distributed.launch(2, bench, (args,))
    print(f"{args.model} ({result['params_m']:.1f}M params), {args.optimizer}, fused="
          f"{args.fused}, fp32, 2 gloo processes x 1 thread, per-process batch "
          f"{args.batch_size} x {args.seq_len}; {args.rounds} rounds x {args.steps} steps")
    print(f"load average before: {load_before[0]:.2f}, after: {result['load'][0]:.2f} "
          f"(this machine has {os.cpu_count()} cores)")
    med = {layout: statistics.median(v) for layout, v in result["times"].items()}
    for i, layout in enumerate(LAYOUTS):
        ranks = ", ".join(f"rank {r} {peaks[i] / 1e6:.0f} MB"
                          for r, peaks in enumerate(result["peaks"]))
        estimate = result["estimates"][i]
        worst = max(abs(peaks[i] / estimate - 1) for peaks in result["peaks"])
        print(f"  sharding={layout:4s} {med[layout]:.3f} s/step (min "
              f"{min(result['times'][layout]):.3f}, max {max(result['times'][layout]):.3f}); "
              f"peak rise {ranks}; estimate {estimate / 1e6:.0f} MB (off by up to "
              f"{worst:.0%})")
    ratios = [peaks[1] / peaks[0] for peaks in result["peaks"]]
    print(f"step time fsdp / none = {med['fsdp'] / med['none']:.3f}")
    print(f"peak rise fsdp / none = {', '.join(f'{r:.2f}' for r in ratios)} (per rank; "
          "target <= 0.6)")


if __name__ == "__main__":
    main()
