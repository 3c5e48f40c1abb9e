"""Causal-LM pre-training: text corpora, a byte-level BPE tokenizer trained on them, and
deterministic batches of windows.

A corpus is tokenized once into three flat streams of ids (train, validation, test), with
an end-of-text id between documents, and cached under `task.cache_dir` keyed by a hash of
the texts and the vocabulary size, so every run on the same text sees the same ids.
"""

from __future__ import annotations

import itertools
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig
from tokenizers import Tokenizer
from transformers import PreTrainedTokenizerFast

from ..errors import ConfigError
from .common import (EOT, SPLITS, check_cache_dir, check_heldout_every, check_vocab_size,
                     data_files, deal, evaluate_causal_lm, fingerprint, load_errors,
                     next_token_loss, pretrained_tokenizer, stdlib_files, train_tokenizer)
from .files import quiet_datasets, read_records, split_files, text_field


@dataclass
class Corpus:
    train: torch.Tensor  # 1-D int32 token ids
    val: torch.Tensor  # for choosing (the learning rate of a tuned sweep)
    test: torch.Tensor  # for reporting: never used to choose anything
    tokenizer: Tokenizer
    fingerprint: str  # hash of the texts and the vocabulary size


def check_config(cfg: DictConfig) -> None:
    check_vocab_size(cfg)
    check_cache_dir(cfg.task.cache_dir)
    if "include" in cfg.task:  # the local corpus (a hub corpus has its own splits)
        check_heldout_every(cfg.task)


def stdlib_texts(task: DictConfig) -> tuple[list[str], list[str], list[str]]:
    """Train, validation and test texts: the stdlib files of `task.include`, dealt by file."""
    return deal([f.read_text(encoding="utf-8", errors="replace") for f in stdlib_files(task)],
                task.heldout_every)


def hub_texts(task: DictConfig) -> tuple[list[str], list[str], list[str]]:
    """The first `max_*_docs` non-empty documents of each split, loaded through `datasets`.
    When validation and test name the same split (C4 has no test split), its first
    2 x `max_eval_docs` documents are dealt alternately to validation and test."""
    import datasets  # imported here: slow to import, and only hub tasks need it

    files = data_files(task)
    local = split_files(task.path, files)

    def take(split: str, limit: int) -> list[str]:
        if local is not None:
            return local_texts(task, local, split)[:limit]
        with load_errors(f"task.path={task.path} (split {split}): cannot be loaded"), \
                quiet_datasets():
            ds = datasets.load_dataset(task.path, task.config_name, split=split,
                                       data_files=files, streaming=task.streaming)
            rows = iter(ds)
            first = next(rows, None)  # a streamed dataset's errors come with its first row
        if first is not None and task.text_field not in first:
            raise ConfigError(f"task.text_field={task.text_field}: not a field of {task.path} "
                              f"(its fields: {', '.join(first)})")
        texts = []
        for row in itertools.chain([first] if first is not None else [], rows):
            text = row[task.text_field]
            if isinstance(text, str) and text.strip():
                texts.append(text)
                if len(texts) == limit:
                    break
        return texts

    train = take(task.train_split, task.max_train_docs)
    if task.val_split == task.test_split:
        heldout = take(task.val_split, 2 * task.max_eval_docs)
        return train, heldout[0::2], heldout[1::2]
    return (train, take(task.val_split, task.max_eval_docs),
            take(task.test_split, task.max_eval_docs))


def local_texts(task: DictConfig, local: dict[str, list[Path]], split: str) -> list[str]:
    """The non-empty texts of a split's local files (ablate/tasks/files.py), in order."""
    if split not in local:
        raise ConfigError(f"task.data_files={data_files(task)}: has no {split} split (its "
                          f"splits: {', '.join(local)})")
    texts = []
    for path in local[split]:
        columns, records = read_records(path)
        if task.text_field not in columns:
            raise ConfigError(f"task.text_field={task.text_field}: not a field of {path} (its "
                              f"fields: {', '.join(columns)})")
        texts += text_field(str(path), records, task.text_field)
    return [text for text in texts if text.strip()]


def check_corpus(corpus: Corpus, t: DictConfig) -> None:
    """Every split holds enough tokens for the windows the trainer will cut (one line, before
    any training step)."""
    window = t.seq_len + 1
    if len(corpus.train) <= window:
        raise ConfigError(f"the train split has {len(corpus.train)} tokens: trainer.seq_len="
                          f"{t.seq_len} needs more than {window} (check task.include or the "
                          "task's data)")
    rows = eval_rows(t)
    needed = t.eval_batches * rows * window
    for split in ("val", "test"):
        tokens = len(getattr(corpus, split))
        if tokens < needed:
            raise ConfigError(f"trainer.eval_batches={t.eval_batches}: the {split} split has "
                              f"{tokens} tokens, fewer than eval_batches x batch_size x "
                              f"processes x (seq_len+1) = {needed}; allowed here: "
                              f"trainer.eval_batches <= {tokens // (rows * window)}")


def eval_rows(t) -> int:
    """Rows of an evaluation window batch: the global micro-batch (batch_size x processes),
    so a job evaluates on the same windows on any number of processes, as its config hash
    (its one-process equivalent) says it is the same job."""
    return t.batch_size * t.processes


def encode(tokenizer: Tokenizer, texts: list[str], eot: int) -> torch.Tensor:
    ids: list[int] = []
    for encoding in tokenizer.encode_batch(texts):
        ids.extend(encoding.ids)
        ids.append(eot)
    return torch.tensor(ids, dtype=torch.int32)


def load_corpus(task: DictConfig, pretrained=None) -> Corpus:
    """The corpus's token ids, by a BPE of `task.vocab_size` tokens trained on its training
    split, or by a pretrained model's tokenizer (`pretrained`); cached by content."""
    texts = dict(zip(SPLITS, stdlib_texts(task) if "include" in task else hub_texts(task)))
    for split in SPLITS:
        if not any(text.strip() for text in texts[split]):
            raise ConfigError(f"task {task.name}: the {split} split holds no text (check the "
                              "task's files: task.include and task.heldout_every, or task.path "
                              "and task.data_files)")
    key = fingerprint(str(task.vocab_size) if pretrained is None else
                      pretrained.backend_tokenizer.to_str(),
                      (text for split in SPLITS for text in [split, *texts[split]]))
    cache = Path(task.cache_dir) / f"{task.name}-{key}"
    if not (cache / "test.pt").exists():
        tokenizer = (train_tokenizer(texts["train"], task.vocab_size) if pretrained is None
                     else pretrained.backend_tokenizer)
        eot = tokenizer.token_to_id(EOT) if pretrained is None else pretrained.eos_token_id
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=cache.parent))  # rename makes the cache appear whole
        tokenizer.save(str(tmp / "tokenizer.json"))
        for split in SPLITS:
            torch.save(encode(tokenizer, texts[split], eot), tmp / f"{split}.pt")
        try:
            os.rename(tmp, cache)
        except OSError:  # another process cached it first
            pass
    return Corpus(**{split: torch.load(cache / f"{split}.pt") for split in SPLITS},
                  tokenizer=Tokenizer.from_file(str(cache / "tokenizer.json")),
                  fingerprint=key)


def train_batch(stream: torch.Tensor, step: int, rows: int, seq_len: int, seed: int):
    """Random windows for one optimizer step; a pure function of (seed, step), so a resumed
    run sees the same data, and k micro-batches of b rows are one batch of k*b rows."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + step)
    starts = torch.randint(0, len(stream) - seq_len - 1, (rows,), generator=g)
    windows = torch.stack([stream[s:s + seq_len + 1] for s in starts.tolist()]).long()
    return windows[:, :-1], windows[:, 1:]


def eval_batches(stream: torch.Tensor, n_batches: int, rows: int, seq_len: int, split: str):
    """Fixed, evenly spaced windows of a held-out stream: the same for every run."""
    n = n_batches * rows
    if len(stream) < n * (seq_len + 1):
        raise ValueError(f"the {split} split has {len(stream)} tokens, fewer than "
                         f"trainer.eval_batches x batch_size x (seq_len+1) = {n * (seq_len + 1)}")
    starts = torch.linspace(0, len(stream) - seq_len - 1, n).long().tolist()
    windows = torch.stack([stream[s:s + seq_len + 1] for s in starts]).long()
    for i in range(n_batches):
        chunk = windows[i * rows:(i + 1) * rows]
        yield chunk[:, :-1], chunk[:, 1:]


class Task:
    """Pre-training on a corpus (`pretrain_local` or a hub corpus): loss, perplexity and
    next-token accuracy on fixed windows of the held-out streams."""

    head = "causal_lm"
    metrics = ("loss", "perplexity", "accuracy")

    def __init__(self, cfg: DictConfig):
        self.t = cfg.trainer
        if cfg.model.pretrained:  # further pre-training: the model's own tokenizer
            self.tokenizer = pretrained_tokenizer(cfg.model.pretrained)
            self.corpus = load_corpus(cfg.task, self.tokenizer)
        else:
            self.corpus = load_corpus(cfg.task)
            self.tokenizer = PreTrainedTokenizerFast(tokenizer_object=self.corpus.tokenizer,
                                                     eos_token=EOT, pad_token=EOT)

    def check(self, t: DictConfig) -> None:
        check_corpus(self.corpus, t)

    def train_batch(self, step: int, rows: int) -> dict[str, torch.Tensor]:
        x, y = train_batch(self.corpus.train, step, rows, self.t.seq_len, self.t.seed)
        return {"input_ids": x, "targets": y}

    def count(self, batch: dict) -> int:
        return batch["targets"].numel()

    def loss(self, model: torch.nn.Module, batch: dict) -> tuple[torch.Tensor, int]:
        return next_token_loss(model, batch)[0], self.count(batch)

    def evaluate(self, model: torch.nn.Module, split: str) -> dict:
        """Loss, perplexity and next-token accuracy on the fixed windows of a held-out split."""
        batches = eval_batches(getattr(self.corpus, split), self.t.eval_batches,
                               eval_rows(self.t), self.t.seq_len, split)
        return evaluate_causal_lm(model, ({"input_ids": x, "targets": y} for x, y in batches),
                                  split)
