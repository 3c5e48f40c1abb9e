"""The memory estimate (ablate.estimate) against the measured peak on CPU.

    OMP_NUM_THREADS=1 python scripts/check_estimate.py [--models llama_20m llama_60m]
        [--optimizers adamw adalomo galore_adamw] [--backward fused unfused]
        [--precisions fp32] [--checkpointing false] [--steps 3] [--batch 4] [--seq-len 256]
        [--device cpu]

For each model, optimizer, backward, `trainer.precision` and
`trainer.activation_checkpointing`: the process's RSS is read, its peak reset
(ablate.memory.reset_peak), then the model and optimizer are built on the CPU and trained
for a few steps on random tokens, as the trainer's step does it (the weights in the
precision's dtype, autocast for bf16, fp32 cross-entropy, backward, and without a fused
backward step() and zero_grad). The measured
figure is the peak RSS's rise over the RSS before the model existed, as
`scripts/bench_adalomo.py` measures it; glibc maps every block of 1 MB or more on its own
(mallopt), so that freed memory leaves the RSS at once and the peak follows the memory in use.

With `--device cuda` all of it runs on the GPU and the measured figure is
`torch.cuda.max_memory_allocated`'s rise over the bytes allocated before the model existed,
its peak reset once the model is built: a job in bf16 weights makes them in fp32 and rounds
them (ablate.models), a transient of building that training never holds again.
"""

from __future__ import annotations

import argparse
import ctypes
import itertools

import torch
import torch.nn.functional as F

from ablate.config.variants import compose
from ablate.estimate import estimate
from ablate.memory import GB, allocated_bytes, peak_bytes, reset_peak
from ablate.models import build_model
from ablate.optim.build import build_optimizer
from ablate.train import enable_activation_checkpointing, weight_dtype

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number


def measured_rise(cfg, steps: int, device: torch.device) -> int:
    """Peak memory rise while building the model and optimizer and training `steps` steps
    (on CUDA, from the model built on)."""
    t = cfg.trainer
    g = torch.Generator().manual_seed(0)
    batches = torch.randint(0, cfg.model.vocab_size, (steps, t.batch_size, t.seq_len + 1),
                            generator=g).to(device)
    reset_peak(device)
    start = allocated_bytes(device)
    torch.manual_seed(0)
    model = build_model(cfg.model, device, dtype=weight_dtype(t))
    if device.type == "cuda":
        reset_peak(device)
    if t.activation_checkpointing:
        enable_activation_checkpointing(model)
    optimizer = build_optimizer(cfg, model)
    for tokens in batches:
        with torch.autocast(device.type, torch.bfloat16, enabled=t.precision.value == "bf16"):
            logits = model(input_ids=tokens[:, :-1]).logits
        logits = logits.float()
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), tokens[:, 1:].reshape(-1))
        del logits
        loss.backward()
        if not cfg.toggles.fused_backward:
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    rise = peak_bytes(device) - start
    del model, optimizer
    return rise


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["llama_20m", "llama_60m"])
    parser.add_argument("--optimizers", nargs="+", default=["adamw", "adalomo", "galore_adamw"])
    parser.add_argument("--backward", nargs="+", choices=("fused", "unfused"),
                        default=["fused", "unfused"])
    parser.add_argument("--precisions", nargs="+", default=["fp32"],
                        choices=("fp32", "bf16", "bf16_weights"))
    parser.add_argument("--checkpointing", nargs="+", default=["false"],
                        choices=("false", "true"))
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cpu":
        ctypes.CDLL(None).mallopt(M_MMAP_THRESHOLD, 1 << 20)
    where = (torch.cuda.get_device_name() if device.type == "cuda"
             else f"{torch.get_num_threads()} threads")
    print(f"batch {args.batch} x {args.seq_len}, {args.steps} steps, {where}; GB = 1e9 bytes")
    print("| model | optimizer | backward | precision | checkpointing | weights | gradients "
          "| state | activations | estimate | measured rise | error |")
    print("|---" * 12 + "|")
    for model, optimizer, backward, precision, checkpointing in itertools.product(
            args.models, args.optimizers, args.backward, args.precisions, args.checkpointing):
        cfg = compose([f"model={model}", f"optimizer={optimizer}",
                       f"toggles.fused_backward={backward == 'fused'}",
                       f"trainer.precision={precision}",
                       f"trainer.activation_checkpointing={checkpointing}",
                       f"trainer.batch_size={args.batch}", f"trainer.seq_len={args.seq_len}"])
        gb = estimate(cfg).gb()
        rise = measured_rise(cfg, args.steps, device) / GB
        print(f"| {model} | {optimizer} | {backward} | {precision} | {checkpointing} | "
              + " | ".join(f"{gb[k]:.3f}" for k in ("weights", "gradients", "optimizer_state",
                                                    "activations", "total"))
              + f" | {rise:.3f} | {100 * (gb['total'] - rise) / rise:+.1f}% |", flush=True)


if __name__ == "__main__":
    main()
