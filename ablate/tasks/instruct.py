"""Instruction tuning: Alpaca-format records (instruction, input, output) in a prompt
template, the loss on the response tokens only.

Records come from the Python standard library (`instruct_local`: each documented function's
signature and docstring is the instruction, its body the response; no download) or through
`datasets` by name or from local JSON/JSONL files (`task.path=json task.data_files=...`:
the same code). Every `heldout_every`-th file (local) or record (datasets) is held out,
alternately for validation and test.

A batch pads its records on the right to the longest of them (at most trainer.seq_len + 1
tokens): no record sees another (packing would need a block-diagonal attention mask), and
the loss divides by the response tokens counted, so padding changes no number. A causal
model's real tokens never attend to the padding after them, so no attention mask is passed.
"""

from __future__ import annotations

import ast
import os
import string
import tempfile
import textwrap
from pathlib import Path

import torch
from omegaconf import DictConfig
from transformers import PreTrainedTokenizerFast

from ..errors import ConfigError
from .common import (EOT, IGNORE, SPLITS, check_cache_dir, check_heldout_every,
                     check_vocab_size, data_files, deal, epoch_indices, evaluate_causal_lm,
                     fingerprint, load_errors, next_token_loss, pretrained_tokenizer,
                     stdlib_files, train_tokenizer)
from .files import quiet_datasets, read_records, split_files, text_field


def check_config(cfg: DictConfig) -> None:
    check_vocab_size(cfg)
    check_cache_dir(cfg.task.cache_dir)
    check_heldout_every(cfg.task)
    if "max_records" in cfg.task and cfg.task.max_records < 1:  # records through `datasets`
        raise ConfigError(f"task.max_records={cfg.task.max_records}: must be >= 1 (the first "
                          "max_records records of task.split are read)")


def stdlib_records(task: DictConfig) -> list[list[dict]]:
    """Per split, one record per documented function of the stdlib files `task.include`
    (dealt by file, as pretrain_local's): its `def` line(s) and docstring as the
    instruction, the rest of its body as the output."""
    per_file = [function_records(f.read_text(encoding="utf-8", errors="replace"))
                for f in stdlib_files(task)]
    return [[r for records in split for r in records]
            for split in deal(per_file, task.heldout_every)]


def function_records(source: str) -> list[dict]:
    try:
        tree = ast.parse(source)
    except SyntaxError:  # a stdlib file for another Python version (lib2to3's tests)
        return []
    lines = source.splitlines(keepends=True)
    records = []
    for node in ast.walk(tree):
        if (isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and len(node.body) > 1
                and ast.get_docstring(node) is not None):
            head = "".join(lines[node.lineno - 1:node.body[0].end_lineno])
            body = "".join(lines[node.body[1].lineno - 1:node.end_lineno])
            records.append({"instruction": textwrap.dedent(head), "input": "",
                            "output": textwrap.dedent(body)})
    return records


def dataset_records(task: DictConfig) -> list[list[dict]]:
    """Per split, the first `max_records` records of `task.split`: local files read by
    ablate/tasks/files.py, else loaded through `datasets` by name; every
    `heldout_every`-th is held out, alternately for validation and test."""
    import datasets  # imported here: slow to import, and only these tasks need it

    files = data_files(task)
    source = f"task.data_files={files}" if files else f"task.path={task.path}"
    local = split_files(task.path, files)
    if local is None:
        with load_errors(f"{source} (split {task.split}): cannot be loaded"), quiet_datasets():
            rows = datasets.load_dataset(task.path, task.config_name, split=task.split,
                                         data_files=files)
        records = alpaca_records(source, rows.column_names,
                                 list(rows.select(range(min(len(rows), task.max_records)))))
    elif task.split not in local:
        raise ConfigError(f"{source}: has no split {task.split} (its splits: "
                          f"{', '.join(local)}; task.split names the one read)")
    else:
        records = [r for path in local[task.split]
                   for r in alpaca_records(str(path), *read_records(path))][:task.max_records]
    if not any(r["output"].strip() for r in records):
        raise ConfigError(f"{source}: every output is empty (nothing to learn: the loss is on "
                          "the output tokens)")
    return list(deal(records, task.heldout_every))


def alpaca_records(source: str, columns: list[str], rows: list[dict]) -> list[dict]:
    """Records of a file or split with Alpaca's fields, each a string (input: optional)."""
    for column in ("instruction", "output"):
        if column not in columns:
            raise ConfigError(f"{source}: no column '{column}' (an Alpaca-format record has "
                              f"instruction, input (optional) and output; its columns: "
                              f"{', '.join(columns)})")
    rows = [{**row, "input": "" if row.get("input") is None else row["input"]} for row in rows]
    return [{"instruction": i, "input": x, "output": o} for i, x, o in zip(
        text_field(source, rows, "instruction", empty_ok=False),
        text_field(source, rows, "input"), text_field(source, rows, "output"))]


def prompt(template: DictConfig, record: dict) -> str:
    text = template.prompt_input if record["input"].strip() else template.prompt_no_input
    return text.format(instruction=record["instruction"], input=record["input"])


def check_template(template: DictConfig) -> None:
    """Each prompt can be filled, and holds what its records bring: {instruction}, and in
    prompt_input {input} too."""
    for key, needed in (("prompt_input", ("instruction", "input")),
                        ("prompt_no_input", ("instruction",))):
        try:
            template[key].format(instruction="", input="")
        except (KeyError, IndexError, ValueError) as exc:
            raise ConfigError(f"task.template.{key}: cannot be filled ({type(exc).__name__}: "
                              f"{exc}); allowed fields: {{instruction}} and {{input}}") from None
        fields = {name for _, name, _, _ in string.Formatter().parse(template[key]) if name}
        missing = [name for name in needed if name not in fields]
        if missing:
            raise ConfigError(f"task.template.{key}: has no {{{missing[0]}}} field (the "
                              f"record's {missing[0]} would not reach the prompt; needed: "
                              f"{', '.join('{' + n + '}' for n in needed)})")


def load_tokenizer(cfg: DictConfig, records: list[dict]) -> PreTrainedTokenizerFast:
    """The pretrained model's own tokenizer, else a byte-level BPE of `task.vocab_size`
    tokens trained on the training records' prompts and responses (cached, keyed by them)."""
    if cfg.model.pretrained:
        return pretrained_tokenizer(cfg.model.pretrained)
    task = cfg.task
    texts = [prompt(task.template, r) + r["output"] for r in records]
    key = fingerprint(str(task.vocab_size), texts)
    path = Path(task.cache_dir) / f"{task.name}-{key}-tokenizer.json"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent)
        os.close(fd)
        train_tokenizer(texts, task.vocab_size).save(tmp)
        os.replace(tmp, path)  # appears whole
    return PreTrainedTokenizerFast(tokenizer_file=str(path), eos_token=EOT, pad_token=EOT)


def encode(tokenizer, template: DictConfig, records: list[dict],
           max_tokens: int) -> list[tuple[list[int], int]]:
    """Each record's token ids (prompt, response, end-of-sequence; cut to `max_tokens`) and
    its prompt's length; a record whose prompt leaves no response token is left out."""
    prompts = tokenizer([prompt(template, r) for r in records])["input_ids"]
    responses = tokenizer([r["output"] for r in records], add_special_tokens=False)["input_ids"]
    return [((p + r + [tokenizer.eos_token_id])[:max_tokens], len(p))
            for p, r in zip(prompts, responses) if len(p) < max_tokens]


def collate(examples: list[tuple[list[int], int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Inputs and next-token targets, padded on the right to the longest example; a target
    is counted only where it is a response token."""
    width = max(len(ids) for ids, _ in examples) - 1
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    targets = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    for row, (ids, prompt_len) in enumerate(examples):
        ids = torch.tensor(ids)
        input_ids[row, :len(ids) - 1] = ids[:-1]
        targets[row, prompt_len - 1:len(ids) - 1] = ids[prompt_len:]
    return {"input_ids": input_ids, "targets": targets}


class Task:
    """Instruction tuning: response loss, perplexity = exp(loss) and top-1 accuracy over
    the response tokens of held-out records."""

    head = "causal_lm"
    metrics = ("loss", "perplexity", "accuracy")

    def __init__(self, cfg: DictConfig):
        self.t, task = cfg.trainer, cfg.task
        check_template(task.template)
        records = stdlib_records(task) if "include" in task else dataset_records(task)
        self.tokenizer = load_tokenizer(cfg, records[0])
        pad_id = self.tokenizer.pad_token_id
        self.pad_id = self.tokenizer.eos_token_id if pad_id is None else pad_id
        self.splits = dict(zip(SPLITS, (encode(self.tokenizer, task.template, r,
                                               self.t.seq_len + 1) for r in records)))
        self.name = task.name

    def check(self, t: DictConfig) -> None:
        for split, records in self.splits.items():
            if not records:
                raise ConfigError(f"task {self.name}: no {split} record fits trainer.seq_len="
                                  f"{t.seq_len} with a response token (allowed: a longer "
                                  "trainer.seq_len, or more data: check the task's files)")

    def train_batch(self, step: int, rows: int) -> dict[str, torch.Tensor]:
        """Records in the order of a fresh shuffle per epoch (seeded by trainer.seed and the
        epoch): a pure function of the step."""
        train = self.splits["train"]
        indices = epoch_indices(self.t.seed, len(train), step * rows, rows)
        return collate([train[i] for i in indices], self.pad_id)

    def count(self, batch: dict) -> int:
        return int((batch["targets"] != IGNORE).sum())

    def loss(self, model: torch.nn.Module, batch: dict) -> tuple[torch.Tensor, int]:
        return next_token_loss(model, batch)[0], self.count(batch)

    def evaluate(self, model: torch.nn.Module, split: str) -> dict:
        """Over every record of the split (that fits trainer.seq_len), batch_size at a time."""
        b, examples = self.t.batch_size, self.splits[split]
        return evaluate_causal_lm(model, (collate(examples[i:i + b], self.pad_id)
                                          for i in range(0, len(examples), b)), split)
