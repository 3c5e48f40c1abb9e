"""The training loop of one job: model, task, optimizer (fused into backward or not), metrics.

The task (ablate/tasks/) gives the batches, the loss and the metrics; the trainer owns the
device, the forward precision, the schedule, accumulation and the optimizer."""

from __future__ import annotations

import contextlib
import math
import sys
import time
from pathlib import Path
from typing import Callable

import torch
from accelerate.utils import set_seed
from omegaconf import DictConfig
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from . import distributed, interrupt, sharding
from .adapter import apply_adapter, restart, save_adapter
from .cores import auto_threads
from .errors import ConfigError
from .fused import OptimizerInBackward
from .memory import GB, optimizer_state_bytes, peak_bytes, reset_peak
from .models import build_model, count_params, hf_config
from .optim.build import build_optimizer, peak_lr
from .tasks import load_task
from .world import World


def pick_device(name: str, world: World = World()) -> torch.device:
    """The job's device; data parallel on CUDA, the GPU of this process's local rank."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and world.size > 1:
        return torch.device("cuda", world.local_rank)
    return torch.device(name)


def weight_dtype(t: DictConfig) -> torch.dtype:
    """The dtype parameters and gradients are stored in: bf16 for `bf16_weights` only
    (`bf16` autocasts the matmuls over fp32 weights)."""
    return torch.bfloat16 if t.precision.value == "bf16_weights" else torch.float32


def enable_activation_checkpointing(model: torch.nn.Module) -> None:
    """transformers' checkpointing of every decoder layer, non-reentrant (torch's
    recommended form); transformers 5 renamed `gradient_checkpointing_enable`."""
    enable = getattr(model, "activation_checkpointing_enable", None) or \
        model.gradient_checkpointing_enable
    enable({"use_reentrant": False})


def lr_at(step: int, t: DictConfig) -> float:
    """Linear warm-up to the peak lr, then cosine or linear decay to peak * `min_lr_ratio`,
    or constant."""
    peak = peak_lr(t)
    if step < t.warmup_steps:
        return peak * (step + 1) / t.warmup_steps
    progress = min(1.0, (step - t.warmup_steps) / max(1, t.max_steps - t.warmup_steps))
    if t.schedule.value == "cosine":
        factor = t.min_lr_ratio + (1 - t.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    elif t.schedule.value == "linear":
        factor = 1 - (1 - t.min_lr_ratio) * progress
    else:
        factor = 1.0
    return peak * factor


STALL_TOL = 0.02  # nats from ln(vocab) that count as "predicts the uniform distribution"


def stalled(final_loss: float, worst_loss: float, vocab_size: int) -> bool:
    """A run that blew up (a loss above twice the uniform-prediction value ln(vocab)) and
    ended stuck at ln(vocab): finite numbers, but nothing learned is left."""
    uniform = math.log(vocab_size)
    return abs(final_loss - uniform) < STALL_TOL and worst_loss > 2 * uniform


def check_vocabulary(task, model: DictConfig) -> None:
    """The task's tokenizer gives no id the model's embedding has no row for."""
    rows = hf_config(model).vocab_size
    if task.tokenizer is not None and len(task.tokenizer) > rows:
        where = f"model.pretrained={model.pretrained}" if model.pretrained else (
            f"model.vocab_size={model.vocab_size}")
        raise ConfigError(f"the task's tokenizer has {len(task.tokenizer)} tokens, more than "
                          f"the model's vocabulary of {rows} ({where}): ids past its embedding "
                          "(allowed: a tokenizer of at most that many tokens)")


def global_loss(losses: list[torch.Tensor]) -> torch.Tensor:
    """The micro-batches' losses summed over the ranks (one collective), then over the
    micro-batches in their order (the sum a host would have added up, bit for bit)."""
    summed = distributed.sum_over_ranks(torch.stack(losses))
    total = summed[0]
    for value in summed[1:]:
        total = total + value
    return total


def read_losses(pending: list[torch.Tensor], worst: float) -> tuple[float, float]:
    """The last of the steps' losses kept on the device and the worst loss so far, read on
    the host in one transfer; `pending` is emptied."""
    losses = torch.stack(pending).tolist()
    pending.clear()
    return losses[-1], max(worst, *losses)


class Trainer:
    def __init__(self, cfg: DictConfig):
        self.cfg = cfg
        self.t = cfg.trainer
        self.world = distributed.setup(pick_device(self.t.device.value).type,
                                       self.t.collective_timeout_s)
        self.device = pick_device(self.t.device.value, self.world)
        torch.set_num_threads(self.t.threads or auto_threads(1, self.world.size))
        reset_peak(self.device)
        set_seed(self.t.seed)
        self.task = load_task(cfg)
        self.task.check(self.t)
        check_vocabulary(self.task, cfg.model)
        self.adapter = cfg.adapter
        self.model = apply_adapter(build_model(cfg.model, self.device, self.task.head,
                                               dtype=weight_dtype(self.t)), cfg.adapter)
        if self.t.activation_checkpointing:
            enable_activation_checkpointing(self.model)
        self.net = self.model  # what the training forward runs: DDP's wrapper when unfused
        self.optimizer = self.data_parallel(cfg) if self.world.size > 1 else build_optimizer(
            cfg, self.model)
        self.fused = isinstance(self.optimizer, OptimizerInBackward)
        self.ddp = isinstance(self.net, DistributedDataParallel)
        self.sharded = self.world.size > 1 and self.t.sharding.value == "fsdp"
        # checkpoints as shards (torch.distributed.checkpoint), readable on any number of
        # ranks: also on one process, where a sharded job's checkpoint continues
        self.sharded_checkpoints = self.t.sharding.value == "fsdp"
        self.autocast = torch.autocast(self.device.type, dtype=torch.bfloat16,
                                       enabled=self.t.precision.value == "bf16")
        self.params_m = count_params(self.model) / 1e6
        self.global_batch = self.world.size * self.t.batch_size * self.t.grad_accum_steps
        self.tokens_per_step = self.global_batch * self.t.seq_len  # over all ranks
        self.step = 0
        self.stopped_by = 0  # what stopped `fit` early: a signal number, or LAUNCHER_DIED
        self.timed_steps, self.timed_s, self.train_s = 0, 0.0, 0.0

    def data_parallel(self, cfg: DictConfig):
        """The optimizer of one of several ranks. Sharded: every rank keeps its shards of
        rank 0's parameters (`sharding.shard`), and the optimizer, fused or not, updates
        them. Fused: every rank starts from rank 0's parameters and each hook's gradient is
        summed over the ranks in buckets before its update. Unfused: DDP (summing too)
        around the model, and the ordinary optimizer."""
        if self.t.sharding.value == "fsdp":
            distributed.broadcast_parameters(self.model)
            sharding.shard(self.model, self.device.type)
            return build_optimizer(cfg, self.model)
        if cfg.toggles.fused_backward:
            distributed.broadcast_parameters(self.model)
            params = [p for p in self.model.parameters() if p.requires_grad]
            return build_optimizer(cfg, self.model, distributed.BucketedAllReduce(
                params, int(self.t.bucket_mb * 2**20), self.t.buckets_in_flight))
        self.net = DistributedDataParallel(
            self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
            bucket_cap_mb=self.t.bucket_mb, forward_sync_buffers=False)
        self.net.register_comm_hook(None, distributed.sum_gradients_hook)
        return build_optimizer(cfg, self.model)

    def train_step(self) -> torch.Tensor:
        """One optimizer step over the global batch: this rank's rows of it, in
        `grad_accum_steps` micro-batches. Each micro-batch's loss is its loss sum over the
        GLOBAL batch's count, so the gradients summed over micro-batches and ranks are the
        global batch's mean. Returns the global batch's mean loss, a float64 tensor on the
        device (reading it waits for the step). A NaN or inf loss on any rank updates no
        parameter on any rank and leaves the step count as it was: after the last forward,
        the micro-batches' losses are summed over the ranks (one collective per step) and
        checked on the host once, before the first update (the fused path updates inside
        the last backward)."""
        t, k, b = self.t, self.t.grad_accum_steps, self.t.batch_size
        lr = lr_at(self.step, t)  # once: reading trainer.lr resolves an interpolation
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        batch = self.task.train_batch(self.step, self.global_batch)
        count = self.task.count(batch)
        mine = self.world.rank * b * k  # this rank's first row
        losses = []
        for i in range(k):
            last = i == k - 1
            rows = slice(mine + i * b, mine + (i + 1) * b)
            micro = {key: v[rows].to(self.device) for key, v in batch.items()}
            if self.sharded:  # no reduce-scatter before the last micro-batch
                self.model.set_requires_gradient_sync(last)
            with self.net.no_sync() if self.ddp and not last else contextlib.nullcontext():
                with self.autocast:
                    loss = self.task.loss(self.net, micro)[0] / count
                losses.append(loss.detach().double())
                if last:
                    total = global_loss(losses)
                    if not torch.isfinite(total).item():  # the step's one host sync
                        return total
                if self.fused:
                    self.optimizer.accumulating = not last
                    self.optimizer.backward(loss, t.clip_grad_norm)
                else:
                    loss.backward()
        if not self.fused:
            if t.clip_grad_norm is not None and self.sharded:
                sharding.clip_grad_norm_(list(self.model.parameters()), t.clip_grad_norm)
            elif t.clip_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), t.clip_grad_norm)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        if self.adapter.name == "relora" and self.step % self.adapter.restart_every == 0:
            restart(self.model, self.optimizer)
            if self.world.size > 1:  # the new A drawn on every rank: rank 0's kept
                distributed.broadcast_parameters(self.model)
        return total

    @torch.no_grad()
    def evaluate(self, split: str) -> dict:
        """The task's metrics on a held-out split (`val` or `test`), keyed `{split}_loss` etc."""
        self.model.eval()
        with self.autocast:
            metrics = self.task.evaluate(self.model, split)
        self.model.train()
        return metrics

    def save_model(self, folder: Path | None) -> None:
        """The model and the task's tokenizer in transformers' format (`save_pretrained`), so
        `model.pretrained=FOLDER` starts a job from them, offline; with an adapter, the
        adapter in peft's format (and the merged model on request: `adapter.save_merged`).
        Sharded, every rank calls it (the others with no folder): the shards are gathered
        whole onto rank 0, which writes them."""
        whole = sharding.whole_state_dict(self.model) if self.sharded else None
        if folder is None:
            return
        tokenizer = self.task.tokenizer
        for config in (self.model.config, self.model.generation_config):
            if config is not None:
                config.bos_token_id = config.eos_token_id = tokenizer.eos_token_id
                config.pad_token_id = tokenizer.pad_token_id
        folder.mkdir(parents=True, exist_ok=True)  # a file in the way raises here, not later
        if self.adapter.name == "none":
            self.model.save_pretrained(folder, state_dict=whole)
        else:
            save_adapter(self.model, self.adapter, folder)
        tokenizer.save_pretrained(folder)
        config = "config.json" if self.adapter.name == "none" else "adapter_config.json"
        if not (folder / config).is_file() or not any(folder.glob("*.safetensors")):
            raise OSError(f"saving the model left no {config} and weights in {folder}")

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def tgs(self) -> float:
        """Trained tokens per second on this device (the global batch's tokens over the
        ranks), over the steps after the warm-up."""
        steps, seconds = (self.timed_steps, self.timed_s) if self.timed_steps else (self.step,
                                                                                   self.train_s)
        return self.tokens_per_step / self.world.size * steps / seconds if seconds else 0.0

    def state_dict(self) -> dict:
        """Everything a killed run needs to end as if it had never stopped (the data
        position is the step: batches are a pure function of seed and step)."""
        optimizer = self.optimizer.state_dict()
        if self.sharded_checkpoints:
            optimizer = sharding.string_keys(optimizer)
        return {"model": self.model.state_dict(), "optimizer": optimizer,
                "step": self.step, "rng": torch.get_rng_state(),
                "timing": (self.timed_steps, self.timed_s, self.train_s)}

    def state_template(self) -> dict:
        """`state_dict()` with every parameter's optimizer state created: what a sharded
        checkpoint is read into."""
        for opt in getattr(self.optimizer, "optimizers", {"": self.optimizer}).values():
            for group in opt.param_groups:
                for p in group["params"]:
                    opt.init_state(p, group)
        return self.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(sharding.index_keys(state["optimizer"])
                                       if self.sharded_checkpoints else state["optimizer"])
        self.step = state["step"]
        torch.set_rng_state(state["rng"])
        self.timed_steps, self.timed_s, self.train_s = state["timing"]

    def fit(self, log: Callable[[dict], None],
            checkpoint: Callable[[], None] | None = None) -> dict:
        """Train to `max_steps`; `log` receives each metrics record, `checkpoint` is called
        every `checkpoint_every` steps, and when a signal stops the job (ablate/interrupt.py)
        at the step it stopped at. Returns the results for the summary."""
        t = self.t
        status, loss, worst, saved, outcome = "completed", float("nan"), -math.inf, None, {}
        pending: list[torch.Tensor] = []  # the losses not yet read, on the device
        bar = tqdm(total=t.max_steps, initial=self.step, desc="train", dynamic_ncols=True,
                   disable=not (t.progress and sys.stderr.isatty()))
        while self.step < t.max_steps:
            # A signal (or a dead launcher) stops every rank at the same step boundary.
            self.stopped_by = int(distributed.max_over_ranks(interrupt.noted()))
            if self.stopped_by:
                outcome = interrupt.outcome(self.stopped_by, self.step)
                status = outcome.pop("status")
                if checkpoint and t.checkpoint_every and saved != self.step:
                    checkpoint()
                break
            began, before = time.perf_counter(), self.step
            step_loss = self.train_step()
            self.sync()
            took = time.perf_counter() - began
            if self.step == before:  # a non-finite loss: the step updated nothing
                status, loss = "diverged", step_loss.item()
                pending.clear()  # the finite losses before it: the summary says where it ended
                log({"step": self.step + 1, "loss": loss})
                break
            pending.append(step_loss)
            self.train_s += took
            if self.step > t.tgs_warmup_steps:
                self.timed_steps, self.timed_s = self.timed_steps + 1, self.timed_s + took
            bar.update(1)
            if self.step % t.log_interval == 0 or self.step == t.max_steps:
                loss, worst = read_losses(pending, worst)
                bar.set_postfix(loss=f"{loss:.3f}", refresh=False)
                log({"step": self.step, "loss": loss, "lr": lr_at(self.step - 1, t),
                     "tokens": self.step * self.tokens_per_step, "tgs": self.tgs(),
                     "elapsed": self.train_s})
            if t.eval_interval and self.step % t.eval_interval == 0 and self.step < t.max_steps:
                log({"step": self.step, **self.evaluate("val")})
            if checkpoint and t.checkpoint_every and self.step % t.checkpoint_every == 0:
                checkpoint()
                saved = self.step
        bar.close()
        if pending:  # stopped by a signal between two logs
            loss, worst = read_losses(pending, worst)
        if status == "completed":
            evaluation = {**self.evaluate("val"), **self.evaluate("test")}
            log({"step": self.step, **evaluation})
            if stalled(loss, worst, self.model.config.vocab_size):
                status = "stalled"
        else:
            evaluation = {f"{split}_{metric}": float("nan") for split in ("val", "test")
                          for metric in self.task.metrics}
        return {
            "status": status, **outcome, "final_train_loss": loss, "peak_lr": peak_lr(t),
            **evaluation,
            "peak_memory_gb": distributed.max_over_ranks(peak_bytes(self.device)) / GB,
            "optimizer_state_gb": optimizer_state_bytes(self.optimizer) / GB,
            "tgs": self.tgs(), "steps": self.step, "tokens": self.step * self.tokens_per_step,
            "train_s": self.train_s, "params_m": self.params_m, "device": str(self.device),
            "world_size": self.world.size, "threads": torch.get_num_threads(),
            "global_batch_size": self.global_batch,
            "memory_kind": "cuda_max_allocated" if self.device.type == "cuda" else "cpu_peak_rss",
        }
