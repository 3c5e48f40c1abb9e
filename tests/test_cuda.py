"""What CUDA does differently from the CPU, on CUDA: the peak memory kind, bf16 weights,
the fused per-parameter hooks (run on autograd's device thread and the gradient's stream),
GaLore's 8-bit states through bitsandbytes' CUDA kernels, NCCL (a process group of one).

Marked `cuda`; without a GPU each is skipped and pytest's summary (-ra) says why.
scripts/gpu_check.sh runs them on the device machine. Some CUDA kernels sum in an order
that changes from run to run (atomic adds: attention's backward): the tests ask torch for
deterministic kernels (cuBLAS' workspace setting must precede CUDA's start, so it is set on
import), and still compare whole runs within a tolerance, exactly only where the same
inputs go through the same kernels."""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist

from ablate import distributed
from ablate.memory import GB, optimizer_state_bytes
from ablate.optim.build import build_optimizer
from ablate.train import Trainer
from conftest import assert_same_params, train
from test_galore import GALORE, eps_matched, run_with
from test_precision import IDS, OPTIMIZERS, assert_updates_are_fp32_rounded

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU (scripts/gpu_check.sh runs these)")]

if torch.cuda.is_available():
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
CUDA = ["trainer.device=cuda"]
# Adam's eps keeps gradients of cancelling terms (summed in any order) from being amplified.
FUSED = {"adamw": ["optimizer=adamw", "optimizer.eps=1e-4"], "sgd": ["optimizer=sgd"],
         "lomo": ["optimizer=lomo"], "adalomo": ["optimizer=adalomo"],
         "galore": [*GALORE, "optimizer.eps=1e-4"],
         "galore eight_bit": [*GALORE, "optimizer.eps=1e-4", "toggles=eight_bit",
                              "optimizer.rank=64"]}


class Cycle:
    """An object that only the garbage collector frees (as a finished job's optimizer and
    its hooks are)."""

    def __init__(self, tensor: torch.Tensor):
        self.me, self.tensor = self, tensor


@pytest.fixture(autouse=True)
def deterministic():
    torch.use_deterministic_algorithms(True, warn_only=True)
    yield
    torch.use_deterministic_algorithms(False)


def test_peak_is_the_cuda_allocators_since_the_job_started(tiny_cfg):
    """Two GiB of a previous job (one freed, one garbage in a reference cycle) are not in
    the job's peak; the peak is what max_memory_allocated says at the end, and holds at
    least the weights and the state."""
    torch.empty(2**28, device="cuda").fill_(1.0)  # 1 GiB, freed at once
    Cycle(torch.ones(2**28, device="cuda"))  # 1 GiB, freed by a garbage collection
    trainer = Trainer(tiny_cfg(*CUDA))
    results = trainer.fit(lambda record: None)
    assert results["memory_kind"] == "cuda_max_allocated" and results["device"] == "cuda"
    assert results["peak_memory_gb"] == torch.cuda.max_memory_allocated() / GB
    peak = torch.cuda.max_memory_allocated()
    weights = sum(p.numel() * p.element_size() for p in trainer.model.parameters())
    assert weights + optimizer_state_bytes(trainer.optimizer) < peak < 2**28 * 4


@pytest.mark.parametrize("optimizer", OPTIMIZERS, ids=IDS)
def test_each_bf16_update_is_the_fp32_update_rounded_on_cuda(tiny_cfg, optimizer):
    assert_updates_are_fp32_rounded(tiny_cfg(*optimizer, "toggles.fused_backward=false",
                                             "trainer.lr=0.01"), "cuda")


@pytest.mark.parametrize("optimizer", ["adamw", "adalomo", "galore"])
def test_bf16_weights_train_in_bf16_on_cuda_fused_as_unfused(tiny_cfg, optimizer):
    runs = []
    for fused in ("true", "false"):
        run = Trainer(tiny_cfg(*FUSED[optimizer], *CUDA, "trainer.precision=bf16_weights",
                               f"toggles.fused_backward={fused}"))
        grads = set()
        for p in run.model.parameters():
            p.register_hook(lambda g: grads.add((g.dtype, g.device.type)))
        run.losses = [run.train_step().item() for _ in range(4)]
        assert grads == {(torch.bfloat16, "cuda")}
        assert {(p.dtype, p.device.type) for p in run.model.parameters()} == {
            (torch.bfloat16, "cuda")}
        runs.append(run)
    assert runs[0].losses == pytest.approx(runs[1].losses, rel=1e-2)
    assert_same_params(runs[0].model, runs[1].model, rtol=2e-2, atol=2e-3)


@pytest.mark.parametrize("optimizer", list(FUSED))
def test_fused_backward_equals_unfused_on_cuda(tiny_cfg, optimizer):
    fused = train(tiny_cfg(*FUSED[optimizer], *CUDA, "toggles.fused_backward=true"))
    plain = train(tiny_cfg(*FUSED[optimizer], *CUDA, "toggles.fused_backward=false"))
    assert fused.losses == pytest.approx(plain.losses, rel=1e-4)
    assert fused.losses[-1] < fused.losses[0]
    assert_same_params(fused.model, plain.model, rtol=1e-4, atol=1e-5)


def test_eight_bit_states_are_codes_on_cuda_tracking_bitsandbytes_adamw8bit(tiny_cfg):
    """tests/test_galore.py's check on CUDA, where bitsandbytes' CUDA kernels quantize our
    moments and run its AdamW8bit: ours against it, measured against what 8 bits change."""
    import bitsandbytes as bnb

    common = (*GALORE, *CUDA, "model.hidden_size=128", "model.intermediate_size=256",
              "toggles.projection=none")
    ours = train(tiny_cfg(*common, "toggles.eight_bit=true"))
    fp32 = train(tiny_cfg(*common, "toggles.eight_bit=false"))
    reference = run_with(tiny_cfg(*common), lambda model: eps_matched(bnb.optim.AdamW8bit)(
        model.parameters(), lr=0.01, weight_decay=0.0))
    codes = [v for state in ours.optimizer.state.values() for v in state.values()
             if torch.is_tensor(v) and v.dtype == torch.uint8]
    assert codes and {v.device.type for v in codes} == {"cuda"}
    for (name, p), q, r in zip(ours.model.named_parameters(), reference.model.parameters(),
                               fp32.model.parameters()):
        assert (p - q).norm() < 0.1 * (p - r).norm(), name


def test_nccl_process_group_of_one_sums_to_the_gradient_itself(tiny_cfg, tmp_path):
    """The fused backward's bucketed all-reduce over NCCL with one rank trains what the
    fused backward without communication trains."""
    cfg = tiny_cfg("optimizer=adalomo", *CUDA, "toggles.fused_backward=true")
    alone = train(cfg)
    dist.init_process_group("nccl", init_method=f"file://{tmp_path}/store", rank=0,
                            world_size=1, device_id=torch.device("cuda", 0))
    try:
        reduced = Trainer(cfg)
        reduced.optimizer.remove_hooks()
        params = [p for p in reduced.model.parameters() if p.requires_grad]
        reduced.optimizer = build_optimizer(cfg, reduced.model, distributed.BucketedAllReduce(
            params, bucket_bytes=2**16, in_flight=2))
        losses = [reduced.train_step().item() for _ in range(cfg.trainer.max_steps)]
        assert dist.get_backend() == "nccl"
    finally:
        dist.destroy_process_group()
    assert losses == pytest.approx(alone.losses, rel=1e-4)
    assert_same_params(reduced.model, alone.model, rtol=1e-4, atol=1e-5)
