"""Our GaLoreAdamW (fused into backward, as the runner trains) against galore-torch's
GaLoreAdamW (stepped after backward), side by side in one process: same init, same batches.

Every T = update_proj_gap steps the projector is refreshed: an SVD per projected weight on
top of a steady step. So the two are measured apart instead of running T steps: steady
steps (no refresh falls in them), and a few refresh steps run with T = 1 in which the time
inside each implementation's SVD routine is clocked. Step time at T is steady + svd / T,
from which come tokens per second (TGS) and the share of step time in refreshes.

Other processes may share the cores, so: one compute thread (`--threads`), clocked in that
thread's CPU seconds (which waiting for a core does not add to; wall seconds are printed
too), and ours and the reference step in adjacent pairs (alternating who goes first), each
pair giving one TGS ratio; the median and quartiles over pairs are reported. The time
inside the optimizers' own update code is clocked as well, being the part that differs.
Ends with one line of JSON.

With `--device cuda` the clock is the wall clock after a synchronize (the GPU's seconds:
keys `*_gpu_s`), except inside the optimizers' update code, whose host seconds (launching
kernels, unsynchronized: `*_optimizer_host_s`) are clocked; and first, each side's peak
`torch.cuda.max_memory_allocated` is measured alone, over its building and two steps (the
first with its projector refresh).

    .venv/bin/python scripts/bench_galore.py [--models llama_20m llama_60m] [--steps 8]
        [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import defaultdict

import galore_torch.galore_projector
import torch
from galore_torch import GaLoreAdamW as ReferenceGaLoreAdamW

import ablate.optim.galore
from ablate.config.variants import compose
from ablate.memory import allocated_bytes, optimizer_state_bytes, peak_bytes, reset_peak
from ablate.train import Trainer


def reference_optimizer(model: torch.nn.Module, cfg) -> ReferenceGaLoreAdamW:
    """Param groups as the GaLore repository builds them: the nn.Linear weights of attention
    and MLP modules get GaLore, everything else plain AdamW."""
    galore = [m.weight for name, m in model.named_modules()
              if isinstance(m, torch.nn.Linear) and ("attn" in name or "mlp" in name)]
    rest = [p for p in model.parameters() if not any(p is q for q in galore)]
    o = cfg.optimizer
    return ReferenceGaLoreAdamW(
        [{"params": rest}, {"params": galore, "rank": o.rank, "update_proj_gap": o.update_proj_gap,
                            "scale": o.scale, "proj_type": o.proj_type.value}],
        lr=cfg.trainer.lr, betas=tuple(o.betas), eps=o.eps, weight_decay=o.weight_decay,
        no_deprecation_warning=True)


def set_gap(trainer: Trainer, gap: int) -> None:
    """T of either optimizer: ours reads it from the param groups, the reference's
    projectors keep their own copy."""
    for group in trainer.optimizer.param_groups:
        group["update_proj_gap"] = gap
    for state in trainer.optimizer.state.values():
        if "projector" in state:
            state["projector"].update_proj_gap = gap


class Clock:
    """Seconds by `now` (this thread's CPU seconds, or on CUDA the wall clock after a
    synchronize; `unit` names it) spent inside patched functions, by key, since `step()`.
    The key "optimizer" (the update code) runs inside backward's hooks in ours: a
    synchronize there would serialize them, so on CUDA it is clocked in host seconds."""

    def __init__(self, device: str):
        self.inside: dict[str, float] = defaultdict(float)
        cuda = device == "cuda"
        self.unit, self.now = ("gpu", synchronized_time) if cuda else ("cpu", time.thread_time)
        self.update_unit, self.update_now = ("host", time.perf_counter) if cuda else (
            self.unit, self.now)

    def patch(self, owner, name: str, key: str) -> None:
        original = getattr(owner, name)
        now = self.update_now if key == "optimizer" else self.now

        def timed(*args, **kwargs):
            began = now()
            try:
                return original(*args, **kwargs)
            finally:
                self.inside[key] += now() - began
        setattr(owner, name, timed)

    def step(self, trainer: Trainer) -> dict:
        """One training step: its clocked and wall seconds, and the seconds inside each key."""
        self.inside.clear()
        clocked, wall = self.now(), time.perf_counter()
        loss = trainer.train_step()
        return {self.unit: self.now() - clocked, "wall": time.perf_counter() - wall,
                "loss": loss, **self.inside}


def synchronized_time() -> float:
    torch.cuda.synchronize()
    return time.perf_counter()


def state_bytes(optimizer) -> tuple[int, int]:
    """(nominal, held): bytes of the state's tensors as shaped, and bytes of the storages
    they keep alive (a slice U[:, :r] keeps all of U). The reference's projector matrices
    sit inside a GaLoreProjector object, which ablate.memory does not look into."""
    tensors = []
    for state in optimizer.state.values():
        for value in state.values():
            if isinstance(value, torch.Tensor):
                tensors.append(value)
            elif hasattr(value, "ortho_matrix"):
                matrix = value.ortho_matrix
                tensors.extend(matrix if isinstance(matrix, list) else [matrix])
    nominal = sum(t.numel() * t.element_size() for t in tensors)
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}
    return nominal, sum(storages.values())


def quartiles(values: list[float]) -> tuple[float, float, float]:
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q2, q3


def trainers(cfg, sides: tuple[str, ...]) -> list[Trainer]:
    """A Trainer per side, "ours" or "reference": same seed, same init; the reference's
    own optimizer is never stepped."""
    made = []
    for side in sides:
        trainer = Trainer(cfg)
        if side == "reference":
            trainer.optimizer.remove_hooks()
            trainer.optimizer, trainer.fused = reference_optimizer(trainer.model, cfg), False
        made.append(trainer)
    return made


def peak_rise(cfg, side: str) -> int:
    """CUDA bytes at most allocated over those allocated before one side's trainer existed,
    across its building and two steps (the first refreshes the projector)."""
    reset_peak(torch.device("cuda"))  # frees the other side's garbage first
    before = allocated_bytes(torch.device("cuda"))
    (trainer,) = trainers(cfg, (side,))  # the Trainer resets the peak as it starts
    for _ in range(2):
        trainer.train_step()
    return peak_bytes(trainer.device) - before


def bench(model: str, steps: int, refreshes: int, gap: int, clocks: list[Clock],
          device: str, threads: int) -> dict:
    cfg = compose(["optimizer=galore_adamw", f"model={model}", "trainer.batch_size=4",
                   "trainer.seq_len=256", f"trainer.device={device}", "trainer.schedule=constant",
                   "trainer.warmup_steps=0", f"optimizer.update_proj_gap={gap}",
                   "trainer.max_steps=1000000", "logger.wandb.mode=disabled",
                   f"trainer.threads={threads}"])
    peaks = {side: peak_rise(cfg, side) for side in ("ours", "reference")} if (
        device == "cuda") else {}
    ours, reference = trainers(cfg, ("ours", "reference"))
    pair = [(ours, clocks[0]), (reference, clocks[1])]
    steady, refresh = ([], []), ([], [])
    loss_gap = 0.0
    for trainer, _ in pair:  # step 0: the first refresh, state allocation, warm-up
        trainer.train_step()
    refresh_at = {round(i * steps / refreshes) for i in range(refreshes)}
    for i in range(steps):
        order = pair if i % 2 == 0 else pair[::-1]
        if i in refresh_at:
            for trainer, clock in order:
                set_gap(trainer, 1)
                refresh[trainer is reference].append(clock.step(trainer))
                set_gap(trainer, gap)
        records = {trainer is reference: clock.step(trainer) for trainer, clock in order}
        for who, record in records.items():
            steady[who].append(record)
        loss_gap = max(loss_gap, abs(records[False]["loss"] - records[True]["loss"]))

    unit, update_unit = clocks[0].unit, clocks[0].update_unit
    svd = [statistics.median(r["svd"] for r in refresh[who]) for who in (0, 1)]
    at_gap = [[r[unit] + svd[who] / gap for r in steady[who]] for who in (0, 1)]
    ratios = [ref / own for own, ref in zip(*at_gap)]
    q1, ratio, q3 = quartiles(ratios)
    tokens = cfg.trainer.batch_size * cfg.trainer.seq_len
    ours_bytes, ours_held = state_bytes(ours.optimizer)
    ref_bytes, ref_held = state_bytes(reference.optimizer)
    assert ours_bytes == optimizer_state_bytes(ours.optimizer)
    result = {"tgs_ratio": ratio, "tgs_ratio_q1": q1, "tgs_ratio_q3": q3,
              "tgs_ratio_min": min(ratios), "tgs_ratio_max": max(ratios),
              "max_loss_difference": loss_gap}
    for who, name in ((0, "ours"), (1, "reference")):
        result.update({
            f"{name}_tgs": tokens / statistics.median(at_gap[who]),
            f"{name}_state_bytes": (ours_bytes, ref_bytes)[who],
            f"{name}_state_bytes_held": (ours_held, ref_held)[who],
            f"{name}_svd_share": svd[who] / gap / statistics.median(at_gap[who]),
            f"{name}_svd_s": svd[who],
            f"{name}_steady_{unit}_s": statistics.median(r[unit] for r in steady[who]),
            f"{name}_steady_wall_s": statistics.median(r["wall"] for r in steady[who]),
            f"{name}_optimizer_{update_unit}_s": statistics.median(
                r["optimizer"] for r in steady[who]),
        })
    if peaks:
        result.update({f"{side}_peak_bytes": peak for side, peak in peaks.items()},
                      peak_ratio=peaks["ours"] / peaks["reference"])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["llama_20m", "llama_60m"])
    parser.add_argument("--steps", type=int, default=8, help="timed steady steps (pairs)")
    parser.add_argument("--refreshes", type=int, default=2, help="timed refresh steps")
    parser.add_argument("--gap", type=int, default=200, help="update_proj_gap T")
    parser.add_argument("--threads", type=int, default=1, help="torch compute threads")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    clocks = [Clock(args.device), Clock(args.device)]
    clocks[0].patch(ablate.optim.galore, "projectors", "svd")
    clocks[0].patch(ablate.optim.galore, "galore_adamw", "optimizer")
    clocks[1].patch(galore_torch.galore_projector.GaLoreProjector, "get_orthogonal_matrix", "svd")
    clocks[1].patch(ReferenceGaLoreAdamW, "step", "optimizer")
    unit, update_unit = clocks[0].unit, clocks[0].update_unit
    update = "" if update_unit == unit else f" ({update_unit} s)"
    results = {}
    for model in args.models:
        r = results[model] = bench(model, args.steps, args.refreshes, args.gap, clocks,
                                   args.device, args.threads)
        print(f"{model}: TGS ours/reference {r['tgs_ratio']:.3f} (pairs: quartiles "
              f"{r['tgs_ratio_q1']:.3f}..{r['tgs_ratio_q3']:.3f}, range "
              f"{r['tgs_ratio_min']:.3f}..{r['tgs_ratio_max']:.3f}); TGS (medians over steps) "
              f"ours {r['ours_tgs']:.0f}, reference {r['reference_tgs']:.0f} tokens per "
              f"{unit.upper()} s")
        print(f"  steady step {unit.upper()} s: ours {r[f'ours_steady_{unit}_s']:.3f}, reference "
              f"{r[f'reference_steady_{unit}_s']:.3f} (wall {r['ours_steady_wall_s']:.3f}, "
              f"{r['reference_steady_wall_s']:.3f}); of which optimizer update{update}: ours "
              f"{r[f'ours_optimizer_{update_unit}_s']:.3f}, reference "
              f"{r[f'reference_optimizer_{update_unit}_s']:.3f}")
        print(f"  SVD per refresh: ours {r['ours_svd_s']:.3f} s, reference "
              f"{r['reference_svd_s']:.3f} s; share of step time at T={args.gap}: ours "
              f"{r['ours_svd_share']:.3%}, reference {r['reference_svd_share']:.3%}")
        print(f"  optimizer state bytes: ours {r['ours_state_bytes']:,} (held "
              f"{r['ours_state_bytes_held']:,}), reference {r['reference_state_bytes']:,} "
              f"(held {r['reference_state_bytes_held']:,}); max loss difference "
              f"{r['max_loss_difference']:.2e}", flush=True)
        if args.device == "cuda":
            print(f"  peak max_memory_allocated (rise over the start, two steps): ours "
                  f"{r['ours_peak_bytes']:,}, reference {r['reference_peak_bytes']:,}; ratio "
                  f"ours/reference {r['peak_ratio']:.3f}", flush=True)
    print(json.dumps({"update_proj_gap": args.gap, "batch": "4x256", "device": args.device,
                      "threads": args.threads, "results": results}))


if __name__ == "__main__":
    main()
