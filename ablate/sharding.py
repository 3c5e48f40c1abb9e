"""Fully sharded data parallel (`trainer.sharding=fsdp`): torch's FSDP2 (`fully_shard`) on
each decoder layer and at the root, so each rank holds 1/N of every parameter (its rows:
`Shard(0)`), of its gradient and of its optimizer state.

The optimizers here update the local shard (`local`): elementwise updates need nothing
else, what an update sums over a whole tensor (AdaLomo's column statistics and RMS
values, a left projection P^T G, a clipping norm) is summed over the ranks by
`sum_over_shards`, and what needs the whole matrix (GaLore's svd, Muon's Newton-Schulz)
is all-gathered by `gather`, computed the same on every rank, and cut to the rank's rows
(`my_rows`). The state of a sharded parameter is kept as DTensors, sharded by rows or
replicated (`state_zeros`, `like`, `replicated`, `placed_like`), so that a checkpoint
written by `torch.distributed.checkpoint` loads on any number of processes.

FSDP averages gradients over the ranks; our losses are already divided by the global
batch's count (ablate/distributed.py), so the divide factor is set to 1: the reduce-scatter
sums.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor
from torch.distributed.tensor import DTensor, Replicate


def shard(model: torch.nn.Module, device_type: str) -> None:
    """`fully_shard` each unit (`units`), then the root (what is left: the final norm), over
    all ranks; gradients summed, not averaged. An input embedding of its own is not gathered
    in the backward (its gradient needs only the token ids); on CPU the backward prefetches
    nothing and the gradients are reduce-scattered by `InPlaceReduceScatter`."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import FSDPModule, fully_shard

    mesh = init_device_mesh(device_type, (dist.get_world_size(),))
    for unit in units(model):
        fully_shard(unit, mesh=mesh)
    fully_shard(model, mesh=mesh)
    inp = model.get_input_embeddings()
    if isinstance(inp, FSDPModule) and isinstance(inp, torch.nn.Embedding):  # a unit of its
        inp.set_unshard_in_backward(False)  # own (untied), and a plain lookup (no adapter)
    for module in model.modules():  # each fully_shard's own parameter group
        if isinstance(module, FSDPModule):
            module.set_gradient_divide_factor(1.0)
            module.set_force_sum_reduction_for_comms(True)  # gloo has no PREMUL_SUM
            if device_type == "cpu":
                reduce_scatter = InPlaceReduceScatter()
                module.set_custom_reduce_scatter(reduce_scatter)
                if module is not model:  # a unit (the root's parameters are small)
                    reduce_scatter.watch(module)
                # gloo's all-gathers are synchronous: a prefetch would only hold the next
                # unit sooner, so each unit prefetches itself (gathered already: nothing)
                module.set_modules_to_backward_prefetch([module])


class InPlaceReduceScatter:
    """FSDP2's reduce-scatter of a unit's flat gradients on gloo (a `ReduceScatter`): an
    all-reduce in place, this rank's part copied out, and the input freed at once. gloo's own
    `reduce_scatter_tensor` copies its whole input first, and FSDP keeps the input until the
    next unit's reduce-scatter (so that a GPU's asynchronous one is not overwritten; gloo's
    is done when it returns): at N=2 each is one unit's whole gradient more (the output
    layer's). Measured for 65 MB on 2 processes here: 1.9 MB above the output, 42 ms, where
    `reduce_scatter_tensor` took 65.7 MB and 92 ms.

    It first frees the unit's whole gradients: FSDP has copied them into the input by then,
    but torch 2.13's `foreach_reduce` keeps the last one alive (in a loop variable) until
    the reduce-scatter is done, so a unit of one parameter (the embedding, the output layer)
    held its whole gradient three times (65.5 MB more at each rank's peak on llama_60m,
    N=2). The gradients are taken as autograd completes them (`watch`)."""

    def __init__(self) -> None:
        self.gradients: list[Tensor] = []

    def watch(self, unit: torch.nn.Module) -> None:
        """Take each whole gradient of `unit`'s parameters as autograd completes it: a hook
        on the unsharded parameters, which FSDP makes at the first gather and then keeps."""
        unit.unshard()
        for p in unit.parameters():
            if p.requires_grad:
                p.register_post_accumulate_grad_hook(lambda p: self.gradients.append(p.grad))
        unit.reshard()

    def allocate(self, size, *, dtype: torch.dtype, device: torch.device) -> Tensor:
        return torch.empty(*size, dtype=dtype, device=device)

    def __call__(self, output_tensor: Tensor, input_tensor: Tensor, group, op,
                 async_op: bool = False) -> None:
        for gradient in self.gradients:
            gradient.untyped_storage().resize_(0)
        self.gradients.clear()
        dist.all_reduce(input_tensor, op=op, group=group)
        output_tensor.copy_(input_tensor.chunk(group.size())[group.rank()])
        input_tensor.untyped_storage().resize_(0)


def units(model: torch.nn.Module) -> list[torch.nn.Module]:
    """What is gathered whole at one time: each decoder block, and the input and output
    embeddings, each its own unless tied (the root holds a tied one): a 32k-token vocabulary's are the largest
    matrices, and the root's parameters stay gathered from the forward to the backward."""
    inp, out = model.get_input_embeddings(), model.get_output_embeddings()
    if out is not None and out.weight is inp.weight:
        return blocks(model)
    return [inp, *blocks(model), *([out] if out is not None else [])]


def blocks(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The decoder blocks of a transformers causal LM (LLaMA's `layers`, GPT-2's `h`), or of
    the one a peft adapter wraps."""
    base = (model.get_base_model() if hasattr(model, "get_base_model") else model).base_model
    return list(getattr(base, "layers", None) or getattr(base, "h"))


def is_sharded(t: Tensor) -> bool:
    return isinstance(t, DTensor)


def local(t: Tensor) -> Tensor:
    """This rank's part of a sharded tensor (its storage: in-place updates reach it), or the
    tensor itself."""
    return t.to_local() if isinstance(t, DTensor) else t


def like(p: Tensor, value: Tensor) -> Tensor:
    """`value`, a tensor of this rank's rows of `p`, as a DTensor sharded like `p` (shape:
    `p`'s rows times `value`'s other dims); itself when `p` is not sharded."""
    if not isinstance(p, DTensor):
        return value
    shape = (p.shape[0], *value.shape[1:])
    stride = torch.empty(shape, device="meta").stride()
    return DTensor.from_local(value, p.device_mesh, p.placements, shape=shape, stride=stride)


def replicated(p: Tensor, value: Tensor) -> Tensor:
    """`value`, the same on every rank, as a replicated DTensor on `p`'s mesh; itself when
    `p` is not sharded."""
    if not isinstance(p, DTensor):
        return value
    return DTensor.from_local(value, p.device_mesh, [Replicate()])


def placed_like(kept, value: Tensor) -> Tensor:
    """`value`, this rank's part of a new value of the state tensor `kept`, placed as
    `kept` is (replicated, or sharded by rows); itself when `kept` is not a DTensor."""
    if not isinstance(kept, DTensor):
        return value
    if all(isinstance(placement, Replicate) for placement in kept.placements):
        return replicated(kept, value)
    return like(kept, value)


def rows(p: Tensor, count: int | None = None) -> slice:
    """This rank's rows of the sharded `p` (FSDP's `Shard(0)`: `torch.chunk`'s, ceil(rows /
    N) to each rank in turn), or of `count` rows sharded as `p` is; all of them when `p` is
    not sharded."""
    count = p.shape[0] if count is None else count
    if not isinstance(p, DTensor):
        return slice(0, count)
    mesh = p.device_mesh
    size = -(-count // mesh.size())
    start = min(mesh.get_local_rank() * size, count)
    return slice(start, min(start + size, count))


def my_rows(p: Tensor, whole: Tensor) -> Tensor:
    """This rank's rows of `whole`, a tensor with `p`'s rows the same on every rank; `whole`
    itself when `p` is not sharded."""
    return whole[rows(p)] if isinstance(p, DTensor) else whole


def state_zeros(p: Tensor, shape, dtype: torch.dtype, by_rows: bool) -> Tensor:
    """Zeros of `shape`, a state tensor of `p`: sharded by its first dimension as `p` is
    (`by_rows`), or replicated; a plain tensor when `p` is not sharded."""
    if not isinstance(p, DTensor):
        return torch.zeros(shape, dtype=dtype, device=p.device)
    device = local(p).device
    if not by_rows:
        return replicated(p, torch.zeros(shape, dtype=dtype, device=device))
    mine = rows(p, shape[0])
    value = torch.zeros((mine.stop - mine.start, *shape[1:]), dtype=dtype, device=device)
    stride = torch.empty(shape, device="meta").stride()
    return DTensor.from_local(value, p.device_mesh, p.placements, shape=tuple(shape),
                              stride=stride)


def gather(p: Tensor, value: Tensor) -> Tensor:
    """The whole tensor whose rows of `p` this rank holds in `value` (an all-gather), the
    same on every rank; `value` itself when `p` is not sharded."""
    return like(p, value).full_tensor() if isinstance(p, DTensor) else value


def sum_over_shards(p: Tensor, value: Tensor) -> Tensor:
    """`value` (computed from this rank's shard of `p`) summed over the ranks holding the
    other shards, in place; itself when `p` is not sharded."""
    if isinstance(p, DTensor):
        dist.all_reduce(value, group=p.device_mesh.get_group())
    return value


def whole_state_dict(model: torch.nn.Module) -> dict[str, Tensor]:
    """The sharded model's state dict gathered whole onto rank 0's CPU, one tensor at a
    time (torch.distributed.checkpoint's full state dict); empty on the other ranks, which
    must call it too."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True,
                                                                cpu_offload=True))


def clip_grad_norm_(params: list[Tensor], max_norm: float) -> None:
    """`torch.nn.utils.clip_grad_norm_` on sharded gradients: the norm over every rank's
    shards (one all-reduce of a scalar), each rank scaling its own."""
    grads = [local(p.grad) for p in params if p.grad is not None]
    total = sum_over_shards(params[0], torch.stack(
        [torch.linalg.vector_norm(g, dtype=torch.float32) for g in grads]).square().sum())
    coef = torch.clamp(max_norm / (total.sqrt() + 1e-6), max=1.0)
    for g in grads:
        g.mul_(coef)


def string_keys(tree):
    """An optimizer's state dict with its parameters' states keyed by strings (their
    indices): torch.distributed.checkpoint names every value by its path of keys."""
    if isinstance(tree, dict):
        return {str(key): string_keys(value) for key, value in tree.items()}
    return tree


def index_keys(tree):
    """`string_keys` undone: each `state` mapping keyed by the parameters' indices again."""
    if isinstance(tree, dict):
        return {key: {int(i): s for i, s in value.items()} if key == "state"
                else index_keys(value) for key, value in tree.items()}
    return tree
