"""8-bit AdamW (Dettmers et al., 2022): bitsandbytes' `AdamW8bit`, its own kernels called per
tensor, in this package's form (state made by `init_state`, fp32 updates for bf16 weights),
so it steps inside backward and the memory estimator counts its state."""

from __future__ import annotations

import torch
from torch import Tensor

from ..sharding import local, state_zeros
from .base import Base, check_hyperparameters, named
from .galore import check_blocks, quantization_code
from .precision import fp32_update

BLOCK = 256  # values per absmax block of bitsandbytes' blockwise 8-bit states


def check_kernels(device_type: str) -> None:
    """ValueError unless bitsandbytes has its blockwise 8-bit kernels for the device (its
    CUDA ones only where torch has CUDA; none on MPS or XPU at 0.50)."""
    import bitsandbytes  # noqa: F401 - registers its kernels

    def has(device: str) -> bool:
        return torch._C._dispatch_has_kernel_for_dispatch_key(
            "bitsandbytes::optimizer_update_8bit_blockwise", device.upper())

    if not has(device_type):
        have = [d for d in ("cpu", "cuda", "mps", "xpu") if has(d)]
        raise ValueError(f"trainer.device={device_type}: bitsandbytes has no 8-bit kernel for "
                         f"it (it has: {', '.join(have)})")


class AdamW8bit(Base):
    eight_bit_states = True  # the config check asks bitsandbytes for the device's kernels

    r"""AdamW with both moments stored as 8-bit codes, blockwise: each block of 256 values
    keeps one fp32 absmax, each value one uint8 index into bitsandbytes' dynamic-tree code
    (signed for m, unsigned for v). Tensors under `min_8bit_size` values keep fp32 moments.

    .. code-block:: text

        for step t, for each parameter p with gradient g:
          m, v <- dequantize(codes, absmax)              (8-bit tensors; fp32 ones as kept)
          p <- p * (1 - lr * wd)
          m <- beta1 m + (1 - beta1) g,   v <- beta2 v + (1 - beta2) g^2
          p <- p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
          codes, absmax <- quantize(m, v)

    The update is bitsandbytes' `optimizer_update_8bit_blockwise` (and `optimizer_update_32bit`
    for small tensors), the kernels `bitsandbytes.optim.AdamW8bit.step()` calls, with the
    same arguments: tested equal to it. The two code maps are the optimizer's, shared by
    every tensor (bitsandbytes puts a reference to them in each state; they are not state
    here, so `optimizer_state_gb` counts codes, absmax and the fp32 moments only). A bf16
    parameter's update runs on an fp32 copy (`precision.fp32_update`), rounded back.

    Sharded by rows (`trainer.sharding=fsdp`), the update is elementwise on each rank's
    rows; a shard of rows is a contiguous run of the flattened tensor, so its blocks are
    one process's blocks when every rank holds the same whole number of 256-value blocks
    (`check_sharding` refuses other shapes): the codes and absmaxes are sharded with it.
    """

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2, min_8bit_size: int = 4096):
        check_hyperparameters(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
        if not min_8bit_size >= 0:
            raise ValueError(f"min_8bit_size={min_8bit_size}: must be >= 0")
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                        min_8bit_size=min_8bit_size)
        super().__init__(params, defaults)
        self._codes: dict[torch.device, tuple[Tensor, Tensor]] = {}

    def init_state(self, p: Tensor, group: dict) -> dict:
        """The state of `p`, created at its first step, as bitsandbytes makes it: a python
        step count and uint8 codes with one fp32 absmax per block, or fp32 moments."""
        state = self.state[p]
        if not state:
            state["step"] = 0
            if p.numel() < group["min_8bit_size"]:
                state["state1"] = torch.zeros_like(p, dtype=torch.float32)
                state["state2"] = torch.zeros_like(p, dtype=torch.float32)
            else:
                blocks = -(-p.numel() // BLOCK)
                for key in ("state1", "state2"):
                    state[key] = torch.zeros_like(p, dtype=torch.uint8)
                for key in ("absmax1", "absmax2"):
                    state[key] = state_zeros(p, (blocks,), torch.float32, by_rows=True)
        return state

    def check_sharding(self, ranks: int) -> None:
        """ValueError for a parameter whose 8-bit states, sharded by rows over `ranks`,
        would not split into whole 256-value blocks, the same number on every rank."""
        for group in self.param_groups:
            for name, p in named(group):
                if p.numel() >= group["min_8bit_size"]:
                    check_blocks(name, p.shape, ranks)

    def codes(self, device: torch.device) -> tuple[Tensor, Tensor]:
        if device not in self._codes:
            self._codes[device] = (quantization_code(True, device),
                                   quantization_code(False, device))
        return self._codes[device]

    def _update(self, params: list[tuple[str, Tensor, dict]]) -> None:
        import bitsandbytes.functional as F  # imported here: slow, and only this needs it

        for _, p, group in params:
            state = self.init_state(p, group)
            state["step"] += 1
            beta1, beta2 = group["betas"]
            with fp32_update(p, state) as (p32, s):
                grad = local(p.grad).float().contiguous()
                if s["state1"].dtype == torch.uint8:
                    code1, code2 = self.codes(p.device)
                    F.optimizer_update_8bit_blockwise(
                        "adam", grad, p32, s["state1"], s["state2"], beta1, beta2, 0.0, 0.0,
                        group["eps"], s["step"], group["lr"], code1, code2, s["absmax1"],
                        s["absmax2"], group["weight_decay"], gnorm_scale=1.0, skip_zeros=False)
                else:
                    F.optimizer_update_32bit(
                        "adam", grad, p32, s["state1"], beta1, group["eps"], s["step"],
                        group["lr"], s["state2"], beta2, 0.0, 0.0, group["weight_decay"], 1.0,
                        None, max_unorm=0.0, skip_zeros=False)
