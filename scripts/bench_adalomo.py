"""Our fused AdaLomo against lomo-optim's AdaLomo: same model init, same batches, one process.

    python scripts/bench_adalomo.py [--models llama_20m llama_60m] [--rounds 6] [--threads N]
        [--batch 4] [--seq-len 256] [--device cpu]

Three ways to run a training step, each on its own copy of the same initial weights and on
the same batches (batch 4 x 256 by default):
- plain:     forward + backward, gradients then freed (no optimizer): the baseline;
- ours:      forward + backward with `ablate.optim.AdaLomo` stepped in backward
             (OptimizerInBackward, the trainer's fused path);
- reference: forward + `lomo_optim.AdaLomo.fused_backward` (its lagged-hook scheme).
The reference runs without loss scaling (loss_scale=None), as we do: both train in fp32.

Time: the three take turns step by step (in an order that rotates each round), so that
other processes on the machine slow all three alike; the first round is a warm-up (it
allocates optimizer state). Each ratio is computed within a round and reported as the
median over rounds with its spread (min-max). Wall-clock and process CPU time are both
reported: on a shared machine CPU time is the steadier one (with --threads 1 especially).
  overhead  = fused step time / plain step time
  TGS ratio = reference step time / our step time (tokens per second, ours over reference)

Memory (after all timing): each way runs two steps on a fresh copy of the weights, its peak
RSS reset first (ablate.memory.reset_peak). glibc is told to map every block of 1 MB or more
on its own (mallopt), so that freeing returns it to the OS at once and the peak RSS follows
the memory in use, instead of depending on each way's allocation history.
  memory ratio = our peak RSS / reference peak RSS

With `--device cuda` the weights, batches and optimizer state live on the GPU, each step
ends with a synchronize (its wall time is the GPU's; its CPU time is the host's launching),
and memory is `torch.cuda.max_memory_allocated` (reset before each way; its rise over the
bytes allocated at the start is printed beside it) instead of the peak RSS.
"""

from __future__ import annotations

import argparse
import copy
import ctypes
import statistics
import time

import torch
import torch.nn.functional as F

from ablate.config.variants import compose
from ablate.fused import OptimizerInBackward
from ablate.memory import allocated_bytes, peak_bytes, reset_peak
from ablate.models import build_model
from ablate.optim import AdaLomo

LR = 1e-3
KINDS = ["plain", "ours", "reference"]
M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number


class Way:
    """One way of running a step, on its own copy of the weights."""

    def __init__(self, kind: str, template: torch.nn.Module):
        from lomo_optim import AdaLomo as ReferenceAdaLomo

        self.kind, self.model = kind, copy.deepcopy(template)
        if kind == "ours":
            self.optimizer = OptimizerInBackward(list(self.model.named_parameters()),
                                                 lambda params: AdaLomo(params, lr=LR))
        elif kind == "reference":
            self.optimizer = ReferenceAdaLomo(self.model, lr=LR, loss_scale=None)

    def step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
        """Wall and process-CPU seconds of one step."""
        synchronize(x.device)
        began = time.perf_counter(), time.process_time()
        logits = self.model(input_ids=x).logits.float()
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), y.reshape(-1))
        del logits
        if self.kind == "reference":
            self.optimizer.fused_backward(loss, LR)
        else:
            loss.backward()
        if self.kind == "plain":
            for p in self.model.parameters():
                p.grad = None
        synchronize(x.device)
        return time.perf_counter() - began[0], time.process_time() - began[1]


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.3f} (spread {min(values):.3f}-{max(values):.3f})"


def setup(model_name: str, rounds: int, batch: int, seq_len: int, device: torch.device):
    model_cfg = compose([f"model={model_name}"]).model
    torch.manual_seed(0)
    template = build_model(model_cfg, device)
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, model_cfg.vocab_size, (rounds, batch, seq_len + 1),
                           generator=g).to(device)
    return template, [(t[:, :-1], t[:, 1:]) for t in tokens]


def time_ways(model_name: str, template: torch.nn.Module, batches: list) -> None:
    ways = {kind: Way(kind, template) for kind in KINDS}
    times = {kind: [] for kind in KINDS}  # per round: (wall, cpu)
    for r, (x, y) in enumerate(batches):
        for kind in KINDS[r % 3:] + KINDS[:r % 3]:
            times[kind].append(ways[kind].step(x, y))

    def ratio(a: str, b: str, clock: int) -> str:
        return spread([ta[clock] / tb[clock] for ta, tb in zip(times[a][1:], times[b][1:])])

    params_m = sum(p.numel() for p in template.parameters()) / 1e6
    x = batches[0][0]
    where = (torch.cuda.get_device_name(x.device) if x.device.type == "cuda"
             else f"{torch.get_num_threads()} threads")
    print(f"\n{model_name} ({params_m:.1f}M params), batch {x.shape[0]} x {x.shape[1]}, "
          f"{len(batches) - 1} timed rounds, {where}")
    for kind in KINDS:
        print(f"  {kind:9s} step wall {spread([t[0] for t in times[kind][1:]])} s, "
              f"cpu {spread([t[1] for t in times[kind][1:]])} s")
    for clock, name in enumerate(("wall", "cpu")):
        print(f"  [{name:4s}] overhead ours {ratio('ours', 'plain', clock)}, "
              f"reference {ratio('reference', 'plain', clock)}")
        print(f"  [{name:4s}] TGS ratio ours/reference {ratio('reference', 'ours', clock)}")


def peak_memory(model_name: str, template: torch.nn.Module, batches: list) -> None:
    peaks, starts = {}, {}
    device = batches[0][0].device
    for kind in KINDS:
        way = Way(kind, template)
        reset_peak(device)
        starts[kind] = allocated_bytes(device)
        for x, y in batches[:2]:
            way.step(x, y)
        peaks[kind] = peak_bytes(device)
        del way
    what, start = ("max_memory_allocated", "memory allocated") if device.type == "cuda" else (
        "RSS", "RSS")
    print(f"\n{model_name}: peak {what} (its rise over the {start} at the start) " + ", ".join(
        f"{k} {peaks[k] / 2**20:.0f} MiB (+{(peaks[k] - starts[k]) / 2**20:.0f})" for k in KINDS))
    print(f"  peak memory ratio ours/reference {peaks['ours'] / peaks['reference']:.3f} "
          f"(plain/reference {peaks['plain'] / peaks['reference']:.3f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["llama_20m", "llama_60m"])
    parser.add_argument("--rounds", type=int, default=6, help="the first is a warm-up")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.Tensor.cuda = lambda self, *a, **k: self  # lomo-optim puts its state on .cuda()
    setups = {name: setup(name, args.rounds, args.batch, args.seq_len, device)
              for name in args.models}
    for name, (template, batches) in setups.items():
        time_ways(name, template, batches)
    if device.type == "cpu":
        ctypes.CDLL(None).mallopt(M_MMAP_THRESHOLD, 1 << 20)
    for name, (template, batches) in setups.items():
        peak_memory(name, template, batches)


if __name__ == "__main__":
    main()
