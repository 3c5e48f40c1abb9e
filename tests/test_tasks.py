"""Tasks beyond pre-training: pretrained weights in and out (transformers' format), and
instruction tuning on local Alpaca-format files and on the offline stdlib set."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoTokenizer

from ablate.config.check import check
from ablate.estimate import estimate
from ablate.models import build_model
from ablate.tasks import load_task
from ablate.train import Trainer
from conftest import assert_same_params, run_in_process

# Stanford Alpaca's prompts, written out here as the reference the template must give.
ALPACA_INPUT = ("Below is an instruction that describes a task, paired with an input that "
                "provides further context. Write a response that appropriately completes the "
                "request.\n\n### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n"
                "### Response:\n")
ALPACA_NO_INPUT = ("Below is an instruction that describes a task. Write a response that "
                   "appropriately completes the request.\n\n### Instruction:\n{instruction}\n\n"
                   "### Response:\n")
WORDS = "add sort reverse count the list of numbers words letters twice then print".split()


def alpaca_records(n: int) -> list[dict]:
    """Varied lengths, every third record with an input."""
    return [{"instruction": " ".join(WORDS[(i + j) % len(WORDS)] for j in range(3 + i % 5)),
             "input": f"{i} {i + 1} {i * 3}" if i % 3 == 0 else "",
             "output": " ".join(WORDS[(i * 7 + j) % len(WORDS)] for j in range(2 + i % 9))}
            for i in range(n)]


@pytest.fixture
def alpaca_file(tmp_path):
    path = tmp_path / "alpaca.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in alpaca_records(60)))
    return path


def local_instruct(data_file) -> list[str]:
    """The hub instruction task, loading a local file through `datasets` (the same code)."""
    return ["task=instruct_alpaca_gpt4", "task.path=json", f"task.data_files={data_file}",
            "task.heldout_every=5", "task.vocab_size=300", "trainer.seq_len=192"]


@pytest.mark.parametrize("model", ["llama_tiny", "gpt2_tiny"])
def test_saved_model_loads_back_through_model_pretrained(tiny_cfg, tmp_path, model):
    small = ["task.include=[a*.py,b*.py]", "task.heldout_every=3"]  # a corpus read twice
    trainer = Trainer(tiny_cfg(f"model={model}", *small))
    trainer.train_step()
    trainer.save_model(tmp_path / "model")
    cfg = tiny_cfg(f"model.pretrained={tmp_path / 'model'}", "model.hidden_size=8", *small)
    check(cfg)  # the shape keys are the checkpoint's: hidden_size=8 is ignored
    assert estimate(cfg) == estimate(tiny_cfg(f"model={model}", *small))
    loaded = build_model(cfg.model)
    x = trainer.task.train_batch(0, 2)["input_ids"]
    trainer.model.eval()
    loaded.eval()
    with torch.no_grad():
        assert torch.equal(trainer.model(input_ids=x).logits, loaded(input_ids=x).logits)
    text = "def f(x):\n    return x + 1\n"
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "model")
    assert tokenizer(text)["input_ids"] == trainer.task.tokenizer(text)["input_ids"]
    # Further pre-training reads the corpus with the checkpoint's tokenizer: the same ids.
    again = load_task(cfg)
    assert len(again.tokenizer) == 512 and torch.equal(again.corpus.train, trainer.task.corpus.train)


def test_response_loss_equals_a_hand_computation(tiny_cfg, alpaca_file, monkeypatch):
    """Validation loss and accuracy over the response tokens of the held-out records (every
    5th, alternately val and test: records 4, 14, ..., 54 are val), computed
    record by record with F.cross_entropy on unpadded inputs; the training batches count
    exactly the response tokens and the end-of-sequence token."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    cfg = tiny_cfg(*local_instruct(alpaca_file), "trainer.batch_size=4")
    trainer = Trainer(cfg)
    tokenizer, model = trainer.task.tokenizer, trainer.model.eval()
    loss_sum, correct, count = 0.0, 0, 0
    records = alpaca_records(60)
    for r in records[4::10]:
        template = ALPACA_INPUT if r["input"] else ALPACA_NO_INPUT
        prompt = tokenizer(template.format(**r))["input_ids"]
        response = tokenizer(r["output"], add_special_tokens=False)["input_ids"]
        ids = torch.tensor([prompt + response + [tokenizer.eos_token_id]])
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0, len(prompt) - 1:-1]
        targets = ids[0, len(prompt):]
        loss_sum += F.cross_entropy(logits, targets, reduction="sum").item()
        correct += (logits.argmax(-1) == targets).sum().item()
        count += len(targets)
    with torch.no_grad():
        metrics = trainer.task.evaluate(model, "val")
    assert metrics["val_loss"] == pytest.approx(loss_sum / count, rel=1e-5)
    assert metrics["val_accuracy"] == correct / count
    batch = trainer.task.train_batch(0, 6)
    outputs = {r["output"] + tokenizer.eos_token for i, r in enumerate(records) if (i + 1) % 5}
    for targets in batch["targets"]:
        assert tokenizer.decode(targets[targets != -100]) in outputs
    assert trainer.task.count(batch) == int((batch["targets"] != -100).sum())
    first = trainer.task.train_batch(0, 4)  # what the first step trains on
    with torch.no_grad():
        first_sum, first_count = trainer.task.loss(trainer.model.train(), first)
    assert trainer.train_step() == pytest.approx(first_sum.item() / first_count, rel=1e-6)


OPTIMIZER_TOGGLES = [
    ("adamw", "all"), ("sgd", "all"), ("lomo", "all"),
    *[("adalomo", t) for t in ("all", "no_adaptive_lr", "no_grouped_norm", "no_nmf",
                               "global_norm")],
    *[("galore_adamw optimizer.rank=4", t) for t in ("all", "no_projection", "random_proj",
                                                     "pca_proj", "two_sided", "eight_bit")],
]


@pytest.fixture(scope="module")
def instruct_task(tmp_path_factory, cache_dir):
    """One local instruction task for every optimizer below (its loading is not what they test)."""
    from ablate.config.variants import compose
    from conftest import TINY

    path = tmp_path_factory.mktemp("alpaca") / "alpaca.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in alpaca_records(60)))
    short = ["task.template.prompt_input='{instruction}: {input}\\n'",
             "task.template.prompt_no_input='{instruction}:\\n'"]  # short rows: fast steps
    return load_task(compose([*TINY, f"task.cache_dir={cache_dir}", *local_instruct(path),
                              *short]))


@pytest.mark.parametrize("optimizer,toggles", OPTIMIZER_TOGGLES)
def test_every_optimizer_and_toggle_instruction_tunes_fused_as_unfused(
        tiny_cfg, instruct_task, monkeypatch, optimizer, toggles):
    """Two steps of instruction tuning: the fused backward ends at the parameters of the
    ordinary loop, and both moved from the initial ones."""
    monkeypatch.setattr("ablate.train.load_task", lambda cfg: instruct_task)
    monkeypatch.setattr("ablate.train.reset_peak", lambda device: None)  # a full gc each
    runs = []
    for fused in ("true", "false"):
        cfg = tiny_cfg(*local_instruct("unused"), *f"optimizer={optimizer}".split(),
                       f"toggles={toggles}", f"toggles.fused_backward={fused}",
                       "trainer.warmup_steps=0", "trainer.schedule=constant",
                       "trainer.batch_size=2")
        check(cfg)
        trainer = Trainer(cfg)
        initial = [p.detach().clone() for p in trainer.model.parameters()]
        losses = [trainer.train_step().item() for _ in range(2)]
        assert all(map(math.isfinite, losses))
        assert any(not torch.equal(p, q) for p, q in zip(initial, trainer.model.parameters()))
        runs.append((trainer, losses))
    (fused, fused_losses), (plain, plain_losses) = runs
    assert fused_losses == pytest.approx(plain_losses, rel=1e-5)
    assert_same_params(fused.model, plain.model)


def test_offline_chain_pretrain_save_then_instruction_tune(tmp_path, tiny_args):
    """`trainer.save_model=true` writes RUN_DIR/model/; `model.pretrained=RUN_DIR/model`
    instruction-tunes it on the offline stdlib set with its own tokenizer."""
    code, out, err = run_in_process(tmp_path, *tiny_args, "logger.wandb.mode=disabled",
                                    "trainer.max_steps=2", "trainer.save_model=true",
                                    "hydra.run.dir=outputs/runs/pretrain")
    assert code == 0, err
    summary_path = tmp_path / "outputs" / "runs" / "pretrain" / "summary.json"
    model_dir = json.loads(summary_path.read_text())["model_dir"]
    assert (summary_path.parent / "model" / "config.json").exists()
    code, out, err = run_in_process(
        tmp_path, *tiny_args, "logger.wandb.mode=disabled", "task=instruct_local",
        "task.include=[a*.py,b*.py]", "task.heldout_every=3", "trainer.seq_len=256",
        f"model.pretrained={model_dir}", "trainer.max_steps=2", "hydra.run.dir=outputs/runs/instruct")
    assert code == 0, err
    assert "completed: adamw" in out and "test_loss=" in out
    pretrained = json.loads(summary_path.read_text())
    tuned = json.loads((tmp_path / "outputs" / "runs" / "instruct" / "summary.json").read_text())
    assert tuned["status"] == "completed" and tuned["params_m"] == pretrained["params_m"]
