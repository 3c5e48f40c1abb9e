"""Corpora and batches: the local default, and the hub tasks' code path on local files."""

from __future__ import annotations

import json

import pytest
import torch

from ablate.tasks.pretrain import eval_batches, load_corpus, stdlib_texts, train_batch
from ablate.train import Trainer

WORDS = "the quick brown fox jumps over the lazy dog while optimizers argue about memory".split()


def test_local_split_is_deterministic_and_disjoint(tiny_cfg):
    task = tiny_cfg().task
    train, val, test = stdlib_texts(task)
    assert (train, val, test) == stdlib_texts(task)
    n = len(train) + len(val) + len(test)
    assert len(val) + len(test) == n // task.heldout_every and 0 <= len(val) - len(test) <= 1
    assert not set(train) & set(val) and not set(train) & set(test) and not set(val) & set(test)


def test_corpus_is_cached_and_tokenizer_round_trips(tiny_cfg):
    corpus = load_corpus(tiny_cfg().task)
    again = load_corpus(tiny_cfg().task)
    assert torch.equal(corpus.train, again.train) and corpus.fingerprint == again.fingerprint
    assert corpus.tokenizer.get_vocab_size() == 512
    assert int(corpus.train.max()) < 512
    text = "def f(x):\n    return x + 1\n"
    assert corpus.tokenizer.decode(corpus.tokenizer.encode(text).ids) == text


def test_batches_are_a_function_of_seed_and_step(tiny_cfg):
    stream = load_corpus(tiny_cfg().task).train
    x, y = train_batch(stream, 3, 4, 16, seed=0)
    assert torch.equal(x, train_batch(stream, 3, 4, 16, seed=0)[0])
    assert not torch.equal(x, train_batch(stream, 4, 4, 16, seed=0)[0])
    assert torch.equal(x[:, 1:], y[:, :-1])
    first, second = list(eval_batches(stream, 2, 4, 16, "train"))
    assert first[0].shape == (4, 16) and not torch.equal(first[0], second[0])


def write_split(path, n_docs, offset):
    rows = [{"text": " ".join(WORDS[(i + offset + j) % len(WORDS)] for j in range(40))}
            for i in range(n_docs)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


@pytest.mark.parametrize("task", ["pretrain_hub_wikitext103", "pretrain_hub_c4"])
def test_hub_task_code_path_on_local_files(tiny_cfg, tmp_path, monkeypatch, task):
    """The hub tasks load through `datasets` by name; here the name is the `json` builder
    and the files are local, so the same code runs without a download."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    train_file = write_split(tmp_path / "train.jsonl", 200, 0)
    val_file = write_split(tmp_path / "valid.jsonl", 50, 7)
    test_file = write_split(tmp_path / "test.jsonl", 30, 3)
    cfg = tiny_cfg(f"task={task}", "task.path=json", "task.config_name=null",
                   f"task.data_files={{train: '{train_file}', validation: '{val_file}', "
                   f"test: '{test_file}'}}",
                   "task.max_train_docs=150", "task.max_eval_docs=20", "task.vocab_size=300",
                   f"task.cache_dir={tmp_path / 'cache'}")
    corpus = load_corpus(cfg.task)
    eot = corpus.tokenizer.token_to_id("<|endoftext|>")
    assert int((corpus.train == eot).sum()) == 150
    assert int((corpus.val == eot).sum()) == 20 and int((corpus.test == eot).sum()) == 20
    # WikiText's test split is its own file; C4 deals its validation documents alternately.
    assert not torch.equal(corpus.val, corpus.test)
    trainer = Trainer(cfg)
    assert trainer.train_step() > 0
