"""Update math in fp32 for parameters stored in a lower precision (`trainer.precision=
bf16_weights`), shared by every optimizer here: each per-tensor update runs on fp32 tensors
only, and `fp32_update` moves values between the stored dtypes and fp32 (a checkpoint
keeps them: `base.Base.load_state_dict`)."""

from __future__ import annotations

from contextlib import ExitStack, contextmanager
from typing import Iterator

import torch
from torch import Tensor

from ..sharding import is_sharded, local, placed_like


def is_float(value) -> bool:
    return torch.is_tensor(value) and value.is_floating_point()


def fp32(x: Tensor) -> Tensor:
    """`x.float()` without a call when `x` is fp32 already (it is then `x` itself)."""
    return x if x.dtype == torch.float32 else x.float()


@contextmanager
def fp32_update(p: Tensor, state: dict) -> Iterator[tuple[Tensor, dict]]:
    """`p` and its state as fp32 for one update. An fp32 tensor is handed out itself (updated
    in place: no copy, no cost); any other floating tensor as an fp32 copy, written back
    rounded to its own dtype once the update is done. State the update creates or replaces
    is stored in the dtype it had, or a new tensor in `p`'s dtype (GaLore's projectors, as
    torch makes a buffer like its parameter); integers and 8-bit codes pass through. A
    sharded parameter and its sharded state are handed out as this rank's shards
    (`sharding.local`); state the update replaces keeps the placement it had
    (`sharding.placed_like`)."""
    p = local(p)
    p32 = fp32(p)
    state32 = {key: fp32(local(value)) if is_float(value) else local(value)
               for key, value in state.items()}
    yield p32, state32
    if p32 is not p:
        p.copy_(p32)
    for key, value in state32.items():
        kept = state.get(key)
        if value is local(kept):  # updated in place
            continue
        if is_float(value):  # a copy in fp32, or state the update created
            value = value.to(kept.dtype if is_float(kept) else p.dtype)
        state[key] = placed_like(kept, value)


@contextmanager
def fp32_updates(params: list[Tensor], states: list[dict]
                 ) -> Iterator[tuple[list[Tensor], list[dict]]]:
    """`fp32_update` of each parameter and its state, for a multi-tensor update: lists of
    fp32 parameters and states, written back at the end. Parameters all fp32 and whole (not
    sharded) are handed out themselves with their states, which are then fp32 (or integers):
    what `fp32_update` would hand out, without its context per tensor."""
    if all(p.dtype == torch.float32 and not is_sharded(p) for p in params):
        yield list(params), list(states)
        return
    with ExitStack() as stack:
        pairs = [stack.enter_context(fp32_update(p, state)) for p, state in zip(params, states)]
        yield [p32 for p32, _ in pairs], [state32 for _, state32 in pairs]
