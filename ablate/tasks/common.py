"""What the tasks share: the checks of their common keys, their data (standard-library files,
or `datasets` with its errors as one line), the byte-level BPE they train and its cache key,
a pretrained model's tokenizer, the order of a fine-tuning task's batches, and the causal-LM
loss and evaluation."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import sysconfig
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer

from ..errors import ConfigError, first_line

EOT = "<|endoftext|>"
MIN_VOCAB = 257  # a byte-level BPE: 256 byte tokens and the end-of-text token
IGNORE = -100  # cross_entropy's ignore_index: a target that is not counted
SPLITS = ("train", "val", "test")


def check_vocab_size(cfg: DictConfig) -> None:
    """A BPE of `task.vocab_size` tokens: its byte tokens, and no id past the embedding."""
    size = cfg.task.vocab_size
    if size < MIN_VOCAB:
        raise ConfigError(f"task.vocab_size={size}: must be >= {MIN_VOCAB} (the "
                          "tokenizer's 256 byte tokens and its end-of-text token)")
    if not cfg.model.pretrained and size > cfg.model.vocab_size:
        raise ConfigError(f"task.vocab_size={size}: must be <= model.vocab_size="
                          f"{cfg.model.vocab_size} for model {cfg.model.name}")


def check_heldout_every(task: DictConfig) -> None:
    if task.heldout_every < 2:
        raise ConfigError(f"task.heldout_every={task.heldout_every}: must be >= 2 (every "
                          "k-th file is held out; the others train)")


def check_cache_dir(folder: str | None) -> None:
    """`task.cache_dir`: a writable folder, or one that can be made (nothing is written)."""
    if folder is None:
        return
    path = Path(folder).expanduser().absolute()
    existing = next(p for p in [path, *path.parents] if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"task.cache_dir={folder}: cannot be written ({existing} is not a "
                          "writable directory); allowed: a writable folder")


def stdlib_files(task: DictConfig) -> list[Path]:
    """The stdlib files matching `task.include`, sorted by path."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted({p.relative_to(root).as_posix() for pattern in task.include
                    for p in root.glob(pattern) if p.is_file() and "site-packages" not in p.parts})
    if not files:
        raise ConfigError(f"task.include={list(task.include)}: matches no file under {root}")
    return [root / f for f in files]


def deal(items: list, k: int) -> tuple[list, list, list]:
    """Train, validation and test: every k-th item is held out, alternately for validation
    and test."""
    heldout = [x for i, x in enumerate(items) if (i + 1) % k == 0]
    return [x for i, x in enumerate(items) if (i + 1) % k], heldout[0::2], heldout[1::2]


def data_files(task: DictConfig):
    """`task.data_files` as `datasets` takes it: a path, a list, {split: path(s)}, or None."""
    files = task.data_files
    return OmegaConf.to_container(files) if OmegaConf.is_config(files) else files


@contextlib.contextmanager
def load_errors(head: str, config_hint: str = ""):
    """Any error inside (`datasets` raises many kinds: offline, no such dataset, config, file
    or split) as one line, `{head}: {reason}`, with `config_hint` after it where the reason
    is a config the builder does not have."""
    try:
        yield
    except Exception as exc:  # noqa: BLE001
        reason = f"{type(exc).__name__}: {first_line(exc)}".rstrip(": ")
        hint = config_hint if "BuilderConfig" in reason else ""
        raise ConfigError(f"{head}: {reason}{hint}") from exc


def train_tokenizer(texts: list[str], vocab_size: int) -> Tokenizer:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOT], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(texts, trainer)
    return tokenizer


def fingerprint(head: str, texts) -> str:
    """A cache key: 16 hex digits of a SHA-256 of `head` (what else the cached files depend
    on: the vocabulary size, or a pretrained tokenizer) and the texts, in order."""
    digest = hashlib.sha256(head.encode())
    for text in texts:
        digest.update(text.encode("utf-8", errors="replace"))
    return digest.hexdigest()[:16]


def auto_tokenizer(name: str):
    """A pretrained model's own tokenizer, or one line saying why it cannot be loaded."""
    try:
        return AutoTokenizer.from_pretrained(name)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"model.pretrained={name}: has no tokenizer that transformers can "
                          f"load ({type(exc).__name__}: {first_line(exc)})") from None


def pretrained_tokenizer(name: str):
    """A pretrained model's own tokenizer (fast: its `tokenizers` backend encodes corpora)."""
    tokenizer = auto_tokenizer(name)
    if tokenizer.eos_token_id is None or not tokenizer.is_fast:
        raise ConfigError(f"model.pretrained={name}: its tokenizer has no end-of-sequence "
                          "token or is not a fast (`tokenizers`) one")
    return tokenizer


@functools.lru_cache(maxsize=2)  # consecutive steps read one epoch's, or two
def epoch_permutation(seed: int, n: int, epoch: int) -> list[int]:
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g).tolist()


def epoch_indices(seed: int, n: int, first: int, rows: int) -> list[int]:
    """Positions `first` to `first + rows` of a stream of epochs over n records, each epoch
    a permutation drawn from (seed, epoch): a fine-tuning task's batch, a pure function of
    the step."""
    return [epoch_permutation(seed, n, epoch)[i]
            for epoch, i in (divmod(position, n) for position in range(first, first + rows))]


def next_token_loss(model: torch.nn.Module, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Next-token cross-entropy summed over the targets that are not IGNORE, and the logits."""
    logits = model(input_ids=batch["input_ids"]).logits.float()
    targets = batch["targets"]
    loss_sum = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1),
                               reduction="sum")
    return loss_sum, logits


def evaluate_causal_lm(model: torch.nn.Module, batches, split: str) -> dict:
    """Loss, perplexity = exp(loss) and top-1 accuracy over the counted targets of `batches`
    (dicts of input_ids and targets, on any device)."""
    device = next(model.parameters()).device
    loss_sum, correct, count = 0.0, 0, 0
    for batch in batches:
        batch = {k: v.to(device) for k, v in batch.items()}
        batch_sum, logits = next_token_loss(model, batch)
        counted = batch["targets"] != IGNORE
        loss_sum += batch_sum.item()
        correct += ((logits.argmax(-1) == batch["targets"]) & counted).sum().item()
        count += int(counted.sum())
    loss = loss_sum / count
    return {f"{split}_loss": loss,
            f"{split}_perplexity": torch.tensor(loss, dtype=torch.float64).exp().item(),
            f"{split}_accuracy": correct / count}
