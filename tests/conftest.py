"""Shared fixtures: tiny configs that train in seconds on a CPU."""

from __future__ import annotations

import pytest

from ablate.config import compose

# A 2-layer model on a 512-token vocabulary: big enough to be a real LLaMA, small enough
# that a few steps take well under a second.
TINY = [
    "model.hidden_size=64", "model.intermediate_size=128", "model.num_layers=2",
    "model.num_heads=2", "task.vocab_size=512", "trainer.seq_len=32", "trainer.batch_size=4",
    "trainer.max_steps=6", "trainer.warmup_steps=2", "trainer.eval_batches=2",
    "trainer.log_interval=1", "trainer.eval_interval=0", "trainer.tgs_warmup_steps=1",
    "logger.wandb.mode=disabled", "trainer.device=cpu", "trainer.progress=false",
]


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    """One tokenizer cache for the whole session (training a 512-token BPE takes ~1 s)."""
    return str(tmp_path_factory.mktemp("cache"))


@pytest.fixture
def tiny_cfg(cache_dir):
    """`tiny_cfg("optimizer=sgd", ...)`: a composed config for a tiny job."""
    def make(*overrides: str):
        return compose([*TINY, f"task.cache_dir={cache_dir}", *overrides])
    return make
