"""Tasks: what a job trains on and how it is scored, behind one interface the trainer calls.

`load_task(cfg)` imports `ablate/tasks/{task.kind}.py` and returns its `Task(cfg)`; the
module's `check_config(cfg)` checks the task's own keys before any data is read (a
ConfigError, one line). A `Task` has:

- `head`: what the model needs on top: "causal_lm", or an int n, a sequence-classification
  head with n outputs (1: regression), read by `models.build_model(cfg.model, device, head)`;
- `tokenizer`: a transformers tokenizer (a job saves it beside the model), or None;
- `check(trainer_cfg)`: a ConfigError (one line) before any compute when the data cannot
  give the batches asked for;
- `train_batch(step, rows) -> dict[str, Tensor]`: a pure function of (trainer.seed, step);
  every tensor's first dimension is `rows`, so micro-batches and data-parallel ranks each
  take a slice of one global batch (`{k: v[i:j] for k, v in batch.items()}`);
- `loss(model, batch) -> (loss_sum, count)`: the loss summed over the batch's counted
  targets, and their number (`count(batch)`: the same number without a forward), so the
  trainer divides each micro-batch's sum by the global batch's count;
- `evaluate(model, split) -> dict`: `{split}_loss` and the task's other metrics on `split`
  ("val" for choosing, "test" for reporting), inside the trainer's no-grad, eval-mode and
  autocast context;
- `metrics`: the names `evaluate` returns without the split prefix (a diverged job records
  them as NaN).
"""

from __future__ import annotations

import importlib

from omegaconf import DictConfig


def task_module(cfg: DictConfig):
    kind = cfg.task.kind  # a config.schema.TaskKind member (its name in an untyped config)
    return importlib.import_module(f"{__name__}.{getattr(kind, 'value', kind)}")


def check_task_config(cfg: DictConfig) -> None:
    """The task's own keys (`check_config(cfg)` of its module), before any data is read."""
    task_module(cfg).check_config(cfg)


def load_task(cfg: DictConfig):
    """The task `cfg.task.kind` names, built from the job's config."""
    return task_module(cfg).Task(cfg)
