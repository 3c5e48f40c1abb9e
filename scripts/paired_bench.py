"""Ours (fused into backward, as the runner trains) against a reference optimizer (stepped
after backward), side by side in one process: same init, same batches. Shared by
bench_apollo.py and bench_adam_mini.py (bench_galore.py adds the SVD refreshes to this).

Other processes may share the cores, so: one compute thread, clocked in that thread's CPU
seconds (wall seconds printed too), and ours and the reference step in adjacent pairs
(alternating who goes first), each pair giving one TGS ratio; the median and quartiles
over pairs are reported, with the CPU seconds inside each optimizer's own update code."""

from __future__ import annotations

import argparse
import json
import statistics

import torch
from bench_galore import Clock, quartiles, state_bytes

from ablate.config.variants import compose
from ablate.memory import optimizer_state_bytes
from ablate.train import Trainer


def run_pairs(cfg, make_reference, clocks: list[Clock], steps: int) -> dict:
    """`steps` timed pairs of steps, after one untimed step each (state allocation)."""
    ours = Trainer(cfg)
    reference = Trainer(cfg)  # same seed: same init; its own optimizer is never stepped
    reference.optimizer.remove_hooks()
    reference.optimizer, reference.fused = make_reference(reference.model, cfg), False
    pair = [(ours, clocks[0]), (reference, clocks[1])]
    for trainer, _ in pair:
        trainer.train_step()
    records, loss_gap = ([], []), 0.0
    for i in range(steps):
        order = pair if i % 2 == 0 else pair[::-1]
        step = {trainer is reference: clock.step(trainer) for trainer, clock in order}
        for who, record in step.items():
            records[who].append(record)
        loss_gap = max(loss_gap, abs(float(step[False]["loss"]) - float(step[True]["loss"])))
    ratios = [ref["cpu"] / own["cpu"] for own, ref in zip(*records)]
    q1, ratio, q3 = quartiles(ratios)
    tokens = cfg.trainer.batch_size * cfg.trainer.seq_len
    ours_bytes, ours_held = state_bytes(ours.optimizer)
    ref_bytes, ref_held = state_bytes(reference.optimizer)
    assert ours_bytes == optimizer_state_bytes(ours.optimizer)
    result = {"tgs_ratio": ratio, "tgs_ratio_q1": q1, "tgs_ratio_q3": q3,
              "max_loss_difference": loss_gap}
    for who, name in ((0, "ours"), (1, "reference")):
        result.update({
            f"{name}_tgs": tokens / statistics.median(r["cpu"] for r in records[who]),
            f"{name}_state_bytes": (ours_bytes, ref_bytes)[who],
            f"{name}_state_bytes_held": (ours_held, ref_held)[who],
            f"{name}_step_cpu_s": statistics.median(r["cpu"] for r in records[who]),
            f"{name}_step_wall_s": statistics.median(r["wall"] for r in records[who]),
            f"{name}_optimizer_cpu_s": statistics.median(r["optimizer"] for r in records[who]),
        })
    return result


def report(model: str, r: dict) -> None:
    print(f"{model}: TGS ours/reference {r['tgs_ratio']:.3f} (pairs: quartiles "
          f"{r['tgs_ratio_q1']:.3f}..{r['tgs_ratio_q3']:.3f}); TGS ours {r['ours_tgs']:.0f}, "
          f"reference {r['reference_tgs']:.0f} tokens per CPU s")
    print(f"  step CPU s: ours {r['ours_step_cpu_s']:.3f}, reference "
          f"{r['reference_step_cpu_s']:.3f} (wall {r['ours_step_wall_s']:.3f}, "
          f"{r['reference_step_wall_s']:.3f}); of which optimizer update: ours "
          f"{r['ours_optimizer_cpu_s']:.3f}, reference {r['reference_optimizer_cpu_s']:.3f}")
    print(f"  optimizer state bytes: ours {r['ours_state_bytes']:,} (held "
          f"{r['ours_state_bytes_held']:,}), reference {r['reference_state_bytes']:,} (held "
          f"{r['reference_state_bytes_held']:,}); max loss difference "
          f"{r['max_loss_difference']:.2e}", flush=True)


def main(doc: str, optimizers: list[str], make_reference, ours: tuple, reference: tuple) -> None:
    """A bench's command line: each `--models` x `optimizers`, ours against
    `make_reference(model, cfg)`; `ours` and `reference` are the (class, method) whose CPU
    time is each one's optimizer update. Ends with one line of JSON."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["llama_20m", "llama_60m"])
    parser.add_argument("--steps", type=int, default=8, help="timed steps (pairs)")
    parser.add_argument("--threads", type=int, default=1, help="torch compute threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    clocks = [Clock("cpu"), Clock("cpu")]
    clocks[0].patch(*ours, "optimizer")
    clocks[1].patch(*reference, "optimizer")
    results = {}
    for model in args.models:
        for optimizer in optimizers:
            cfg = compose([f"optimizer={optimizer}", f"model={model}", "trainer.batch_size=4",
                           "trainer.seq_len=256", "trainer.device=cpu",
                           "trainer.schedule=constant", "trainer.warmup_steps=0",
                           "trainer.max_steps=1000000", "logger.wandb.mode=disabled",
                           f"trainer.threads={args.threads}"])
            name = f"{model} {optimizer}"
            results[name] = run_pairs(cfg, make_reference, clocks, args.steps)
            report(name, results[name])
    print(json.dumps({"batch": "4x256", "device": "cpu", "threads": args.threads,
                      "results": results}))
