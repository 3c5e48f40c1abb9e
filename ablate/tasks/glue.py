"""GLUE fine-tuning: a sequence-classification head (a regression head for STS-B) on a
pretrained model, scored with each task's official metric.

Data come from the hub's GLUE by name through `datasets` (`nyu-mll/glue`, config = the
task's name), or from local files read by ablate/tasks/files.py: a folder of GLUE-format
files (`train.tsv`, `validation.jsonl`, ...: the splits come from the file names, by
`datasets`' rules) or files by split (`task.path=csv`, `task.data_files={train: ...,
validation: ...}`). The columns are GLUE's: the task's text column(s) and `label`; every
text and label is checked (one line naming the file, the row and what is allowed).

Splits: GLUE's test labels are hidden, so papers report on its validation split. Here
`test` is that split (MNLI: validation_matched, and validation_mismatched beside it), and
`val`, for choosing (a tuned sweep's lr), is a fixed slice of `task.val_size` examples
held out of GLUE's train split (drawn with a fixed seed, the same for every run).

Metrics are the ones GLUE's own scorer computes (scikit-learn and scipy): Matthews
correlation for CoLA, Pearson and Spearman for STS-B, F1 and accuracy for MRPC and QQP,
accuracy otherwise; the first is the task's score (`glue_metric`, `glue_score`).
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from ..errors import ConfigError
from .common import auto_tokenizer, check_cache_dir, data_files, epoch_indices, load_errors
from .files import quiet_datasets, read_records, split_files
from .glue_tasks import TASKS, GlueTask

VAL_SEED = 0  # the held-out slice of the train split is the same for every run


def score(metric: str, predictions: list, labels: list) -> float:
    """One GLUE metric, as GLUE's scorer computes it (F1 of the positive class 1)."""
    from scipy import stats
    from sklearn import metrics

    if metric == "pearson":
        return float(stats.pearsonr(predictions, labels)[0])
    if metric == "spearman":
        return float(stats.spearmanr(predictions, labels)[0])
    function = {"accuracy": metrics.accuracy_score, "f1": metrics.f1_score,
                "matthews_correlation": metrics.matthews_corrcoef}[metric]
    return float(function(labels, predictions))


def check_name(name: str) -> GlueTask:
    if name not in TASKS:
        raise ConfigError(f"task.name={name}: not a GLUE task (allowed: {', '.join(TASKS)})")
    return TASKS[name]


def check_config(cfg: DictConfig) -> None:
    check_name(cfg.task.name)
    check_cache_dir(cfg.task.cache_dir)


def load_splits(task: DictConfig, spec: GlueTask) -> dict:
    """The train split and every test split, each checked for the task's columns and
    labels (one line naming the file or split, the row and what is allowed): local files
    read by ablate/tasks/files.py, else the hub's GLUE through `datasets`."""
    import datasets  # slow to import: only when a GLUE job runs

    files = data_files(task)
    where = f"task.path={task.path}" + (f" (files {files})" if files else "")
    needed = ["train", *(name for _, name in spec.test_splits)]
    columns = (*spec.text_columns, "label")
    local = split_files(task.path, files)
    if local is None:
        hint = "; local files take task.config_name=null" if task.config_name else ""
        with load_errors(f"{where}: cannot be loaded as GLUE {task.name}", hint), \
                quiet_datasets():
            loaded = datasets.load_dataset(task.path, task.config_name, data_files=files,
                                           cache_dir=task.cache_dir)
        tables = {str(split): [(f"{where}, split {split}", data.column_names,
                                {c: data[c] for c in columns if c in data.column_names})]
                  for split, data in loaded.items()}
    else:
        tables = {split: [local_table(path, columns) for path in paths]
                  for split, paths in local.items()}
    missing = [split for split in needed if split not in tables]
    if missing:
        raise ConfigError(f"{where}: has no {missing[0]} split (its splits: "
                          f"{', '.join(tables)}); GLUE {task.name} needs {', '.join(needed)}")
    splits = {}
    for split in needed:
        merged = {c: [] for c in columns}
        for source, names, values in tables[split]:
            for column in columns:
                if column not in names:
                    raise ConfigError(f"{source}: no column {column!r} (its columns: "
                                      f"{', '.join(names)}); GLUE {task.name} needs "
                                      f"{', '.join(columns)}")
            for column in spec.text_columns:
                row = next((i for i, text in enumerate(values[column])
                            if not isinstance(text, str) or not text.strip()), None)
                if row is not None:
                    raise ConfigError(f"{source}: {column} in row {row + 1} is "
                                      f"{values[column][row]!r}, not text")
            labels = _checked_labels(values["label"], spec, source)
            for column in spec.text_columns:
                merged[column] += values[column]
            merged["label"] += labels
        splits[split] = datasets.Dataset.from_dict(merged)
    return splits


def local_table(path, columns: tuple[str, ...]) -> tuple[str, list[str], dict[str, list]]:
    """A local file as (its name, its column names, {column: values} of `columns`)."""
    names, records = read_records(path)
    return str(path), names, {c: [r.get(c) for r in records] for c in columns if c in names}


def _checked_labels(labels: list, spec: GlueTask, source: str) -> list:
    """The labels as numbers (a CSV's cells are text: "1" is 1), each in the task's range."""
    checked = []
    for row, label in enumerate(labels, 1):
        value = label
        if isinstance(label, str):
            with contextlib.suppress(ValueError):
                value = float(label) if spec.num_labels == 1 else int(label)
        if spec.num_labels == 1:
            ok = type(value) in (int, float) and spec.label_range[0] <= value <= \
                spec.label_range[1]
            allowed = f"a number in {spec.label_range[0]}..{spec.label_range[1]}"
        else:
            ok = type(value) is int and 0 <= value < spec.num_labels
            allowed = f"an integer in 0..{spec.num_labels - 1}"
        if not ok:
            raise ConfigError(f"{source}: label {value!r} in row {row} is out of range "
                              f"(allowed: {allowed})")
        checked.append(value)
    return checked


def pretrained_tokenizer(model: DictConfig):
    """The tokenizer saved with `model.pretrained`; one without a pad token (a LLaMA or
    GPT-2, as ablate saves them) pads with its end-of-text token, which the model's
    classification head then skips (`pad_token_id`). (Not `common.pretrained_tokenizer`: a
    BERT has a pad token but no end-of-sequence token, and GLUE needs only the first.)"""
    tokenizer = auto_tokenizer(model.pretrained)
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ConfigError(f"model.pretrained={model.pretrained}: its tokenizer has neither "
                              "a pad nor an end-of-text token to pad GLUE's batches with")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


class Examples:
    """A split tokenized once: each example's token ids (and masks) and its label."""

    def __init__(self, data, spec: GlueTask, tokenizer, max_length: int):
        self.features = tokenizer(*(list(data[c]) for c in spec.text_columns), truncation=True,
                                  max_length=max_length)
        self.labels = torch.tensor(list(data["label"]), dtype=torch.float32 if spec.num_labels == 1
                                   else torch.long)
        self.tokenizer = tokenizer

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, indices: list[int]) -> dict[str, torch.Tensor]:
        """The examples padded to the longest of them (the tokenizer's padding side)."""
        padded = self.tokenizer.pad({k: [v[i] for i in indices] for k, v in self.features.items()},
                                    return_tensors="pt")
        return {**padded, "labels": self.labels[indices]}


class Task:
    """GLUE task `task.name` (see the module docstring); the interface of ablate.tasks."""

    def __init__(self, cfg: DictConfig):
        task = cfg.task
        self.spec = check_name(task.name)
        self.seed, self.batch_size = cfg.trainer.seed, cfg.trainer.batch_size
        self.head = self.spec.num_labels
        if task.max_eval_examples is not None and task.max_eval_examples < 1:
            raise ConfigError(f"task.max_eval_examples={task.max_eval_examples}: must be >= 1 "
                              "or null (every example)")
        if not cfg.model.pretrained:
            raise ConfigError("task=glue fine-tunes a pretrained model: set model.pretrained "
                              "(a hub name such as roberta-base, or a folder a job saved)")
        self.tokenizer = pretrained_tokenizer(cfg.model)
        splits = load_splits(task, self.spec)
        train = splits["train"]
        if not 0 < task.val_size < len(train):
            raise ConfigError(f"task.val_size={task.val_size}: must be in 1..{len(train) - 1} "
                              f"(the train split has {len(train)} examples)")
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(VAL_SEED))
        val_rows, train_rows = sorted(order[:task.val_size].tolist()), order[task.val_size:]

        def examples(data, limit=task.max_eval_examples):
            if limit is not None:
                data = data.select(range(min(limit, len(data))))
            return Examples(data, self.spec, self.tokenizer, cfg.trainer.seq_len)

        self.train = examples(train.select(sorted(train_rows.tolist())), None)
        self.eval_sets = {"val": {"": examples(train.select(val_rows))},
                          "test": {suffix: examples(splits[split])
                                   for suffix, split in self.spec.test_splits}}
        self.metrics = ["loss", *(f"{m}{suffix}" for suffix, _ in self.spec.test_splits
                                  for m in self.spec.metrics)]

    def check(self, trainer_cfg: DictConfig) -> None:
        """The data were checked when loaded (columns, labels, val_size); any batch size can
        be drawn from the train split (epochs wrap around)."""

    def train_batch(self, step: int, rows: int) -> dict[str, torch.Tensor]:
        """Examples `step * rows` to `(step + 1) * rows` of a stream of epochs, each epoch a
        permutation of the train split drawn from (seed, epoch): a pure function of the step."""
        return self.train.batch(epoch_indices(self.seed, len(self.train), step * rows, rows))

    def count(self, batch: dict) -> int:
        return len(batch["labels"])

    def logits(self, model: torch.nn.Module, batch: dict) -> torch.Tensor:
        # A decoder's head reads each row's last token that is not padding: the pad id is
        # the one these batches are padded with (a saved LLaMA or GPT-2 has none of its own).
        model.config.pad_token_id = self.tokenizer.pad_token_id
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        return model(**inputs).logits.float()

    def loss_of(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Summed over the examples: cross-entropy, or squared error for regression."""
        if self.spec.num_labels == 1:
            return F.mse_loss(logits.squeeze(-1), labels, reduction="sum")
        return F.cross_entropy(logits, labels, reduction="sum")

    def loss(self, model: torch.nn.Module, batch: dict) -> tuple[torch.Tensor, int]:
        return self.loss_of(self.logits(model, batch), batch["labels"]), self.count(batch)

    def predict(self, model: torch.nn.Module, examples: Examples) -> tuple[float, list]:
        """Mean loss and the predictions (class ids, or scores for regression), in order."""
        device = next(model.parameters()).device
        loss_sum, predictions = 0.0, []
        for start in range(0, len(examples), self.batch_size):
            batch = examples.batch(list(range(start, min(start + self.batch_size,
                                                          len(examples)))))
            batch = {k: v.to(device) for k, v in batch.items()}
            logits = self.logits(model, batch)
            loss_sum += self.loss_of(logits, batch["labels"]).item()
            predictions += (logits.squeeze(-1) if self.spec.num_labels == 1
                            else logits.argmax(-1)).tolist()
        return loss_sum / len(examples), predictions

    def evaluate(self, model: torch.nn.Module, split: str) -> dict:
        """`{split}_loss` and the task's metrics on `split` (MNLI's test: matched, and
        mismatched with the suffix `_mismatched`); for test also `glue_metric` and
        `glue_score` (its value)."""
        result = {}
        for suffix, examples in self.eval_sets[split].items():
            loss, predictions = self.predict(model, examples)
            result[f"{split}_loss{suffix}"] = loss
            labels = examples.labels.tolist()
            for metric in self.spec.metrics:
                result[f"{split}_{metric}{suffix}"] = score(metric, predictions, labels)
        if split == "test":
            result["glue_metric"] = self.spec.metrics[0]
            result["glue_score"] = result[f"test_{self.spec.metrics[0]}"]
        return result
