"""The fused backward against the unfused path, per optimizer, in one process: step time,
aten ops per step and the peak memory of a step; and our unfused AdamW and Adafactor
against torch's own with `foreach=True`.

    python scripts/bench_fused.py [--models llama_tiny,llama_60m]
        [--optimizers adamw,sgd,lomo,adalomo,adafactor,galore_adamw,apollo,adam_mini,muon]
        [--big-optimizers adamw,adalomo] [--threads 1,2] [--steps 6] [--big-steps 2]
        [--batch-size B] [--seq-len L]
        [--paths fused,fused/1,unfused,unfused/1,fused/after,torch] [--heap settled|cached]
        [--processes N] [--out FILE.json]

For each model, thread count and optimizer, the paths are built from one seed (the same
init) and step in turns, step by step, the order shuffled each step (seeded), so that other
load on the machine slows all alike and no path always follows the same one (with a
rotation each did, and what a step leaves in the caches and the allocator is part of the
next one's time); each ratio is the median over steps of one path's wall time over the
other's in the same turn. On llama_tiny: `--optimizers`, `--steps` timed steps; on the
larger models: `--big-optimizers`, `--big-steps` (with `--steps 40 --big-steps 16` a run
took 43 minutes on an idle 2-core CPU); each after one untimed step (state allocation),
the peak steps (below) and one more untimed step under the timed steps' heap (`--heap`).
A step is the trainer's batch (conf/trainer: 8 x 128 tokens) unless `--batch-size` and
`--seq-len` say otherwise: the fused path's cost is about fixed per step (the README's
bench section), so its share of a smaller batch's step is larger. `--paths` times only
those paths (fused,unfused: the target's ratio, more turns in the same time). The paths:

- fused: `toggles.fused_backward=true`, a layer's parameters updated at once
  (`trainer.foreach=true`); fused/1: the same, each parameter on its own (foreach off, the
  code before the multi-tensor forms)
- fused/after: the fused optimizer with every group's update held to the end of backward
  (`UpdatedAfterBackward`): the same groups, calls and numbers as fused, run where the
  unfused step runs, so fused / fused/after is what running the updates between the
  backward's ops costs, and fused/after / unfused what the grouped code costs
- unfused: `step()` after backward, all parameters in one multi-tensor update; unfused/1:
  per tensor
- torch: the unfused trainer with `torch.optim.AdamW` / `torch.optim.Adafactor`
  (`foreach=True`), for adamw and adafactor; and the optimizer step alone, ours unfused
  against torch's, on the same gradients (`optimizer_step_alone`)

Muon runs its Newton-Schulz iteration in float32 here (`optimizer.ns_dtype=float32`): in
bf16, its default as torch's, a CPU takes about 25 s a step.

Each ratio is printed with a 95% interval of its median over the turns (`median_interval`):
a target such as "fused at most 1.02 x unfused" is shown when the interval's top is under it.
That interval is the noise of one process. Another process's ratios differ by a per cent or
two (its memory laid out otherwise; llama_tiny's AdaLomo at two threads gave 1.034, 1.010,
1.008 and 1.015 in four processes of 40 turns): `--processes N` runs each cell in N fresh
processes and gives each ratio as the median of their medians, its interval over the
processes (with 5 the range of the five, 94%); every other figure is their median.
`--paths fused,unfused --heap cached --processes 5 --steps 30 --big-steps 10` took 74
minutes.

ops: aten operators per step called from Python (`torch.profiler`, events with no aten
parent; on a GPU each is about one kernel launch; on CPU a foreach op runs its per-tensor
ops inside it, which this leaves out; counted with the elementwise updates on whole
tensors, as on a GPU, not in a CPU's cache-sized batches); all: every aten event, nested
ones too. peak: the rise of the process's peak RSS over a step above the RSS before it
(blocks of 1 MB or more mapped on their own, `MEASURED`, so freed memory leaves the RSS:
as scripts/bench_sharded.py), the median over `PEAK_STEPS` steps before the timed ones:
gradients, activations and temporaries, which is where fused and unfused differ. The
timed steps run with glibc's thresholds where they settle in a training process
(`SETTLED`): under `MEASURED` every block of 1 MB or more is mapped and faulted in anew at
each step, a fifth of llama_tiny's step, which a run does only for blocks over 32 MB.
On llama_60m those blocks (the logits, their gradient, the embedding's and the head's
gradients) are about 600 MB faulted in a step, in the kernel time of a step that moves by
0.2-0.7 s of its 3 s (one thread), in turn after turn: the noise that makes its intervals
5-25% wide. `--heap cached` times the steps with nothing mapped on its own and nothing
handed back (`CACHED`): every freed block reused, as a caching allocator (a GPU's, or
jemalloc) keeps it. The paths then fault nothing, and the step's time is its compute. Both
heaps give each path's page faults per step (flt): under `SETTLED` the fused and unfused
steps fault in the same memory, so what `cached` removes is the same for both.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from unittest import mock

import torch
from scipy import stats

from ablate.config.variants import compose
from ablate.fused import OptimizerInBackward
from ablate.memory import allocated_bytes, peak_bytes, reset_peak
from ablate.tasks.pretrain import load_corpus
from ablate.train import Trainer

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_MMAP_MAX = -1, -3, -4  # glibc's mallopt parameters
MAPS = 65536  # glibc's default M_MMAP_MAX: blocks over the threshold are mapped
MEASURED = (1 << 20, 128 << 10, MAPS)  # blocks of 1 MB or more mapped alone (RSS = in use)
SETTLED = (32 << 20, 64 << 20, MAPS)  # where glibc's own thresholds settle in a training run
CACHED = (32 << 20, 2**31 - 1, 0)  # nothing mapped alone, nothing trimmed: every block reused
HEAPS = {"settled": SETTLED, "cached": CACHED}  # --heap: the timed steps'
PEAK_STEPS = 3  # steps per path whose peak RSS rise is measured


def malloc_thresholds(mmap: int, trim: int, maps: int) -> None:
    """glibc's thresholds set, and its free heap memory handed back (`malloc_trim`): from
    here the RSS counts only memory in use, and a block reused is faulted in again."""
    libc = ctypes.CDLL(None)
    libc.mallopt(M_MMAP_THRESHOLD, mmap)
    libc.mallopt(M_TRIM_THRESHOLD, trim)
    libc.mallopt(M_MMAP_MAX, maps)
    libc.malloc_trim(0)


PATHS = {"fused": ("true", "true"), "fused/1": ("true", "false"),
         "unfused": ("false", "true"), "unfused/1": ("false", "false")}
TORCH = {"adamw": lambda params, o, lr: torch.optim.AdamW(
             params, lr=lr, betas=tuple(o.betas), eps=o.eps, weight_decay=o.weight_decay,
             foreach=True),
         "adafactor": lambda params, o, lr: torch.optim.Adafactor(
             params, lr=lr, beta2_decay=o.beta2_decay, eps=tuple(o.eps), d=o.d,
             weight_decay=o.weight_decay, foreach=True)}
ALL_PATHS = (*PATHS, "fused/after", "torch")
RATIOS = (("fused", "unfused"), ("fused", "fused/after"), ("fused/after", "unfused"),
          ("fused/1", "unfused/1"), ("unfused", "unfused/1"), ("unfused", "torch"))


CPU_OVERRIDES = {"muon": ["optimizer.ns_dtype=float32"]}  # bf16 matmuls crawl on a CPU


def trainers(model: str, optimizer: str, threads: int, args) -> dict[str, Trainer]:
    """The paths of one optimizer asked for (`--paths`), each a trainer from the same seed."""
    sizes = [f"trainer.{key}={value}" for key, value in
             (("batch_size", args.batch_size), ("seq_len", args.seq_len)) if value is not None]

    def cfg(fused: str, foreach: str):
        return compose([f"model={model}", f"optimizer={optimizer}", "trainer.device=cpu",
                        f"toggles.fused_backward={fused}", f"trainer.foreach={foreach}",
                        f"trainer.threads={threads}", "trainer.warmup_steps=0",
                        "logger.wandb.mode=disabled", *sizes, *CPU_OVERRIDES.get(optimizer, [])])
    built = {name: Trainer(cfg(*flags)) for name, flags in PATHS.items() if name in args.paths}
    if "fused/after" in args.paths:
        with mock.patch("ablate.optim.build.OptimizerInBackward", UpdatedAfterBackward):
            built["fused/after"] = Trainer(cfg("true", "true"))
    if optimizer in TORCH and "torch" in args.paths:
        reference = built["torch"] = Trainer(cfg("false", "true"))
        reference.optimizer = TORCH[optimizer](reference.model.parameters(),
                                               reference.cfg.optimizer, reference.t.lr)
    return built


class UpdatedAfterBackward(OptimizerInBackward):
    """The fused optimizer whose groups, once complete, wait for the end of backward, where
    `_backward` updates every group left (see fused/after above)."""

    def _ready(self, name: str) -> None:
        self._complete.setdefault(self._group_of[name], []).append(name)


def aten_ops(trainer: Trainer) -> tuple[int, int]:
    """Aten operators in one training step: those called from Python (none inside another),
    and all (the count the issue's figures give); counted as a GPU would launch them, each
    elementwise update on whole tensors (not in a CPU's cache-sized batches,
    `base.elementwise_batches`)."""
    with mock.patch("ablate.optim.base.CHUNK", None), torch.profiler.profile(
            activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        trainer.train_step()

    def nested(event) -> bool:
        parent = event.cpu_parent
        while parent is not None:
            if parent.name.startswith("aten::"):
                return True
            parent = parent.cpu_parent
        return False
    aten = [e for e in prof.events() if e.name.startswith("aten::")]
    return sum(1 for e in aten if not nested(e)), len(aten)


def median_interval(ratios: list[float], level: float = 0.95) -> tuple[float, float, float]:
    """The median of per-turn ratios and a distribution-free interval for it: the order
    statistics a binomial(n, 1/2) puts at `level` (with 6 turns the range, 97%; with 20 the
    6th to the 15th, 96%). It says whether a ratio differs from 1 beyond the turns' noise."""
    ordered, n = sorted(ratios), len(ratios)
    k = max(int(stats.binom.ppf((1 - level) / 2, n, 0.5)), 1)
    return statistics.median(ordered), ordered[k - 1], ordered[n - k]


def seconds_of(step) -> float:
    began = time.perf_counter()
    step()
    return time.perf_counter() - began


def faults_of(step) -> int:
    """Pages the process faulted in during `step()` (minor faults: memory mapped anew)."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    step()
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


def step_rise(trainer: Trainer) -> int:
    """One training step's peak RSS rise over the RSS before it."""
    cpu = torch.device("cpu")
    reset_peak(cpu)
    before = allocated_bytes(cpu)
    trainer.train_step()
    return peak_bytes(cpu) - before


def bench(model: str, optimizer: str, threads: int, steps: int, args) -> dict:
    paths = trainers(model, optimizer, threads, args)
    names = list(paths)
    for trainer in paths.values():
        trainer.train_step()  # the state allocated
    rises = {name: [step_rise(paths[name]) for _ in range(PEAK_STEPS)] for name in names}
    seconds: dict[str, list[float]] = {name: [] for name in names}
    order = random.Random(0)
    malloc_thresholds(*HEAPS[args.heap])
    for name in names:  # untimed: the heap grown to a step's use, under args.heap
        paths[name].train_step()
    for _ in range(steps):
        for name in order.sample(names, len(names)):
            seconds[name].append(seconds_of(paths[name].train_step))
    faults = {name: faults_of(paths[name].train_step) for name in names}  # one more step
    malloc_thresholds(*MEASURED)
    result = {"model": model, "optimizer": optimizer, "threads": threads, "steps": steps,
              "heap": args.heap}
    for name in names:
        result[f"{name}_s"] = statistics.median(seconds[name])
        result[f"{name}_faults"] = faults[name]
        result[f"{name}_peak_mb"] = statistics.median(rises[name]) / 2**20
        result[f"{name}_ops"], result[f"{name}_all_ops"] = aten_ops(paths[name])
    for a, b in RATIOS:
        if a in seconds and b in seconds:
            result[f"{a}:{b}"], result[f"{a}:{b}_low"], result[f"{a}:{b}_high"] = median_interval(
                [x / y for x, y in zip(seconds[a], seconds[b])])
    if "torch" in paths:
        result.update(optimizer_step_alone(paths["unfused"], paths["torch"], steps,
                                           HEAPS[args.heap]))
    for trainer in paths.values():
        if trainer.fused:
            trainer.optimizer.remove_hooks()
    return result


def optimizer_step_alone(ours: Trainer, theirs: Trainer, steps: int,
                         heap: tuple[int, int, int]) -> dict:
    """Ours unfused against torch's foreach optimizer, the optimizer step alone: both models'
    parameters given the same gradients, then `step()` in turns (forward and backward, the
    same in both, hide a few per cent of difference in the train step's time). Timed, as the
    train steps, under the same heap (`--heap`)."""
    malloc_thresholds(*heap)
    generator = torch.Generator().manual_seed(0)
    for p, q in zip(ours.model.parameters(), theirs.model.parameters()):
        p.grad = torch.randn(p.shape, generator=generator, dtype=p.dtype)
        q.grad = p.grad.clone()
    took = {ours: [], theirs: []}
    for i in range(2 * steps):
        for trainer in (ours, theirs) if i % 2 else (theirs, ours):
            took[trainer].append(seconds_of(trainer.optimizer.step))
    for trainer in (ours, theirs):
        trainer.optimizer.zero_grad(set_to_none=True)
    malloc_thresholds(*MEASURED)
    ratio, low, high = median_interval([x / y for x, y in zip(took[ours], took[theirs])])
    return {"unfused:torch_opt": ratio, "unfused:torch_opt_low": low,
            "unfused:torch_opt_high": high}


def over_processes(model: str, optimizer: str, threads: int, steps: int, args) -> dict:
    """One cell benched in `args.processes` fresh processes of this script: each ratio the
    median of theirs with its interval over them (`median_interval`), every other figure
    the median of theirs (the lower middle one)."""
    runs = [in_process(model, optimizer, threads, steps, args) for _ in range(args.processes)]
    result = {**runs[0], "processes": len(runs)}
    for key in runs[0]:
        if f"{key}_low" in runs[0]:
            result[key], result[f"{key}_low"], result[f"{key}_high"] = median_interval(
                [run[key] for run in runs])
        elif key.endswith(("_s", "_peak_mb", "_ops", "_faults")):
            result[key] = statistics.median_low(run[key] for run in runs)
    return result


def in_process(model: str, optimizer: str, threads: int, steps: int, args) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        out = f"{folder}/cell.json"
        sizes = [f"--{key.replace('_', '-')}={value}" for key, value in
                 (("batch_size", args.batch_size), ("seq_len", args.seq_len))
                 if value is not None]
        command = [sys.executable, __file__, "--models", model, "--optimizers", optimizer,
                   "--big-optimizers", optimizer, "--threads", str(threads), "--steps",
                   str(steps), "--big-steps", str(steps), "--paths", ",".join(args.paths),
                   "--heap", args.heap, *sizes, "--out", out]
        run = subprocess.run(command, capture_output=True, text=True)
        if run.returncode:
            raise RuntimeError(f"{' '.join(command)} failed:\n{run.stderr[-2000:]}")
        with open(out) as f:
            return json.load(f)[0]


INTERVAL = "interval"  # a ratio's median and its interval (median_interval)
COLUMNS = (("model", "model", "{}", 10), ("optimizer", "optimizer", "{}", 12),
           ("thr", "threads", "{}", 3), ("fu:un [95%]", "fused:unfused", INTERVAL, 19),
           ("fu:aft [95%]", "fused:fused/after", INTERVAL, 19),
           ("aft:un [95%]", "fused/after:unfused", INTERVAL, 19),
           ("fu1:un1", "fused/1:unfused/1", "{:.3f}", 7),
           ("un:un1", "unfused:unfused/1", "{:.3f}", 6),
           ("un:tor [95%]", "unfused:torch", INTERVAL, 19),
           ("un:tor step [95%]", "unfused:torch_opt", INTERVAL, 19),
           ("ops_fu", "fused_ops", "{}", 6),
           ("ops_un", "unfused_ops", "{}", 6), ("ops_fu1", "fused/1_ops", "{}", 7),
           ("ops_un1", "unfused/1_ops", "{}", 7), ("ops_tor", "torch_ops", "{}", 7),
           ("all_fu", "fused_all_ops", "{}", 6), ("all_fu1", "fused/1_all_ops", "{}", 7),
           ("pk_fu", "fused_peak_mb", "{:.1f}", 6), ("pk_fu1", "fused/1_peak_mb", "{:.1f}", 6),
           ("pk_un", "unfused_peak_mb", "{:.1f}", 6), ("flt_fu", "fused_faults", "{:.0f}", 7),
           ("flt_un", "unfused_faults", "{:.0f}", 7), ("un_s", "unfused_s", "{:.3f}", 6))


def cell(cells: dict, key: str, fmt: str) -> str:
    if key not in cells:
        return "-"
    if fmt == INTERVAL:
        return f"{cells[key]:.3f} [{cells[key + '_low']:.3f},{cells[key + '_high']:.3f}]"
    return fmt.format(cells[key])


def row(cells: dict) -> str:
    return " ".join(cell(cells, key, fmt).rjust(width) for _, key, fmt, width in COLUMNS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="llama_tiny,llama_60m")
    parser.add_argument("--optimizers", default="adamw,sgd,lomo,adalomo,adafactor,galore_adamw,"
                        "apollo,adam_mini,muon")
    parser.add_argument("--big-optimizers", default="adamw,adalomo",
                        help="the optimizers on models other than llama_tiny")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--steps", type=int, default=6, help="timed steps on llama_tiny")
    parser.add_argument("--big-steps", type=int, default=2, help="timed steps on other models")
    parser.add_argument("--batch-size", type=int,
                        help="rows per step (default: the trainer's, conf/trainer)")
    parser.add_argument("--seq-len", type=int,
                        help="tokens per row (default: the trainer's, conf/trainer)")
    parser.add_argument("--paths", default=",".join(ALL_PATHS),
                        help="the paths timed (fewer: more turns in the same time)")
    parser.add_argument("--heap", choices=HEAPS, default="settled",
                        help="glibc's heap while steps are timed (cached: no page faults)")
    parser.add_argument("--processes", type=int, default=1,
                        help="fresh processes per cell, their medians pooled")
    parser.add_argument("--out", help="also write the results here, as JSON")
    args = parser.parse_args()
    if args.processes < 1:
        parser.error(f"--processes {args.processes}: 1 or more")
    args.paths = args.paths.split(",")
    if len(args.paths) < 2 or not set(args.paths) <= set(ALL_PATHS):
        parser.error(f"--paths {','.join(args.paths)}: two or more of {','.join(ALL_PATHS)}")
    malloc_thresholds(*MEASURED)
    corpus = load_corpus(compose(["logger.wandb.mode=disabled"]).task)  # loaded once
    results = []
    print("fu: fused, un: unfused (multi-tensor); aft: fused, its updates after backward; "
          "fu1, un1: per tensor (foreach off); "
          "tor: torch's foreach optimizer (step: the optimizer step alone); time ratios are "
          f"medians over turns [95% interval of the median]"
          f"{'' if args.processes == 1 else f', pooled over {args.processes} processes'}; "
          f"ops: aten ops per step (all: nested too); pk: MB peak RSS rise in a step; "
          f"flt: page faults in a step (heap: {args.heap}); un_s: unfused seconds per step")
    print(" ".join(title.rjust(width) for title, _, _, width in COLUMNS))
    with mock.patch("ablate.tasks.pretrain.load_corpus", lambda task, pretrained=None: corpus):
        for model in args.models.split(","):
            tiny = model == "llama_tiny"
            steps = args.steps if tiny else args.big_steps
            for threads in (int(t) for t in args.threads.split(",")):
                for optimizer in (args.optimizers if tiny else args.big_optimizers).split(","):
                    cell_of = bench if args.processes == 1 else over_processes
                    results.append(cell_of(model, optimizer, threads, steps, args))
                    print(row(results[-1]), flush=True)
                    gc.collect()
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
