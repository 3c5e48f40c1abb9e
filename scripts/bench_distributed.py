"""Our data-parallel fused backward against DDP and a blocking all-reduce per parameter.

    python scripts/bench_distributed.py [--model llama_20m] [--optimizer adalomo]
        [--batch-size 2] [--seq-len 128] [--rounds 5] [--steps 3]

Two gloo processes on this machine, one CPU thread each, train the same model on the same
per-process batch (the trainer's own `train_step`, so the loss's scalar all-reduce and the
data are the same) in five ways, taking turns round by round so that other load on the
machine slows all alike (the first round is a warm-up):
- ours:      fused backward, gradients summed in buckets by async all-reduces launched
             from the post-accumulate-grad hooks, each bucket's updates run once it is in
             (`toggles.fused_backward=true trainer.processes=2`);
- ddp:       unfused: torch's DistributedDataParallel, then `optimizer.step()`
             (`toggles.fused_backward=false`);
- blocking:  fused, one blocking all-reduce per parameter in its hook, then its update
             (lomo-optim's way);
- local:     fused, no communication at all (each rank steps on its own gradient): the
             compute alone;
- comm:      the all-reduces alone: every bucket of ours, launched together, waited for.
Figures: median seconds per step over the timed rounds, and
  ours / ddp, ours / blocking           (step-time ratios; target <= 1.10 and < 1)
  hidden = 1 - (ours - local) / comm    (the share of communication hidden under backward)
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
import torch.distributed as dist

from ablate import distributed
from ablate.config.variants import compose

MODES = ("ours", "ddp", "blocking", "local")


class BlockingPerParameter:
    """A reducer that all-reduces each gradient alone, blocking, before its update."""

    def ready(self, p, use) -> None:
        dist.all_reduce(p.grad)
        use()

    def finish(self) -> None:
        pass


def comm_time(trainer) -> float:
    """Seconds to sum all of ours' buckets over the ranks, nothing else running."""
    buckets = trainer.optimizer.reducer.buckets
    flats = [torch.zeros(sum(p.numel() for p in b)) for b in buckets]
    dist.barrier()
    began = time.perf_counter()
    for work in [dist.all_reduce(f, async_op=True) for f in flats]:
        work.wait()
    return time.perf_counter() - began


def bench(args) -> dict | None:
    from ablate.train import Trainer

    common = [f"model={args.model}", f"optimizer={args.optimizer}", "trainer.device=cpu",
              "trainer.threads=1",
              f"trainer.batch_size={args.batch_size}", f"trainer.seq_len={args.seq_len}",
              "trainer.processes=2", "logger.wandb.mode=disabled", "trainer.warmup_steps=0"]
    trainers = {mode: Trainer(compose([*common, f"toggles.fused_backward={mode != 'ddp'}"]))
                for mode in MODES}
    trainers["blocking"].optimizer.reducer = BlockingPerParameter()
    trainers["local"].optimizer.reducer = None
    times: dict[str, list[float]] = {mode: [] for mode in (*MODES, "comm")}
    for round_ in range(args.rounds + 1):
        for mode in MODES[round_ % len(MODES):] + MODES[:round_ % len(MODES)]:
            dist.barrier()
            began = time.perf_counter()
            for _ in range(args.steps):
                trainers[mode].train_step()
            took = (time.perf_counter() - began) / args.steps
            if round_:
                times[mode].append(took)
        if round_:
            times["comm"].append(comm_time(trainers["ours"]))
    slowest = {}
    for mode, values in times.items():  # a step takes as long as its slower rank
        t = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        slowest[mode] = t.tolist()
    if dist.get_rank():
        return None
    return {"times": slowest, "load": os.getloadavg(),
            "buckets": len(trainers["ours"].optimizer.reducer.buckets),
            "params_m": trainers["ours"].params_m}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="llama_20m")
    parser.add_argument("--optimizer", default="adalomo")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    load_before = os.getloadavg()
    result = distributed.launch(2, bench, (args,))
    med = {mode: statistics.median(v) for mode, v in result["times"].items()}
    print(f"{args.model} ({result['params_m']:.1f}M params), {args.optimizer}, 2 gloo processes "
          f"x 1 thread, per-process batch {args.batch_size} x {args.seq_len}, "
          f"{result['buckets']} buckets; {args.rounds} rounds x {args.steps} steps")
    print(f"load average before: {load_before[0]:.2f}, after: {result['load'][0]:.2f} "
          f"(this machine has {os.cpu_count()} cores)")
    for mode in (*MODES, "comm"):
        spread = result["times"][mode]
        print(f"  {mode:9s} {med[mode]:.3f} s/step (min {min(spread):.3f}, max "
              f"{max(spread):.3f})")
    hidden = 1 - (med["ours"] - med["local"]) / med["comm"]
    print(f"ours / ddp      = {med['ours'] / med['ddp']:.3f}  (target <= 1.10)")
    print(f"ours / blocking = {med['ours'] / med['blocking']:.3f}  (target < 1)")
    print(f"communication hidden under backward = {hidden:.0%} "
          f"(1 - (ours - local) / comm)")


if __name__ == "__main__":
    main()
