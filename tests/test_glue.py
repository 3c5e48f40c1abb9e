"""GLUE (ablate/tasks/glue.py) on local GLUE-format files the tests write, from tiny models
saved with `save_pretrained` and loaded back through `model.pretrained=<dir>`: a RoBERTa
encoder with a byte-level BPE tokenizer built here, and a LLaMA with an ablate-style
tokenizer (an end-of-text token, no pad token). Each metric is checked against
scikit-learn's or scipy's on predictions made here one example at a time (no padding)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from scipy import stats
from sklearn import metrics
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (AutoModelForSequenceClassification, AutoTokenizer, LlamaConfig,
                          LlamaForCausalLM, PreTrainedTokenizerFast, RobertaConfig,
                          RobertaForMaskedLM, RobertaTokenizerFast)

from ablate.config.variants import compose
from ablate.report.read import read_jobs
from ablate.report.table import fmt, glue_table
from ablate.tasks import load_task
from ablate.train import Trainer
from conftest import run_dirs, run_in_process

GOOD = "good great fine lovely superb fun".split()
BAD = "bad awful dull boring poor sad".split()
FILLER = "the a movie film plot actor scene story was is very quite and but".split()
WORDS = GOOD + BAD + FILLER


def sentence(rng: random.Random, polarity: int) -> str:
    words = rng.choices(FILLER, k=4) + [rng.choice(GOOD if polarity else BAD)]
    rng.shuffle(words)
    return " ".join(words)


def write_rows(path: Path, rows: list[dict]) -> Path:
    """GLUE's columns as .tsv (header line), .csv or .jsonl, by the file's suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    else:
        sep = "\t" if path.suffix == ".tsv" else ","
        path.write_text("\n".join(sep.join(map(str, row.values())) for row in
                                  [dict(zip(rows[0], rows[0])), *rows]) + "\n")
    return path


def single(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    return [{"sentence": sentence(rng, label), "label": label}
            for label in (rng.randrange(2) for _ in range(n))]


def pairs(n: int, seed: int, first: str, second: str, num_labels: int) -> list[dict]:
    """Pairs whose label is how many of the two sentences are positive (classes), or 5 x
    the share of words they have in common (regression, STS-B's 0..5)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        a, b = sentence(rng, rng.randrange(2)), sentence(rng, rng.randrange(2))
        if num_labels == 1:
            wa, wb = set(a.split()), set(b.split())
            label = round(5 * len(wa & wb) / len(wa | wb), 2)
        else:
            label = min(num_labels - 1, sum(any(w in GOOD for w in s.split()) for s in (a, b)))
        rows.append({first: a, second: b, "label": label})
    return rows


@pytest.fixture(scope="session")
def glue_dir(tmp_path_factory) -> Path:
    """One folder per task: sst2 and cola as .tsv (the builder and splits from the file
    names), stsb as .jsonl, mrpc as .csv, mnli as .jsonl with its two validation splits."""
    root = tmp_path_factory.mktemp("glue")
    for task, suffix in (("sst2", "tsv"), ("cola", "tsv")):
        write_rows(root / task / f"train.{suffix}", single(96, 1))
        write_rows(root / task / f"validation.{suffix}", single(40, 2))
    write_rows(root / "stsb" / "train.jsonl", pairs(96, 3, "sentence1", "sentence2", 1))
    write_rows(root / "stsb" / "validation.jsonl", pairs(40, 4, "sentence1", "sentence2", 1))
    write_rows(root / "mrpc" / "train.csv", pairs(64, 5, "sentence1", "sentence2", 2))
    write_rows(root / "mrpc" / "validation.csv", pairs(40, 6, "sentence1", "sentence2", 2))
    for split, seed in (("train", 7), ("validation_matched", 8), ("validation_mismatched", 9)):
        write_rows(root / "mnli" / f"{split}.jsonl", pairs(48, seed, "premise", "hypothesis", 3))
    return root


def bpe(specials: list[str]) -> Tokenizer:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.train_from_iterator([" ".join(WORDS)] * 4, trainers.BpeTrainer(
        vocab_size=320, special_tokens=specials, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return tokenizer


@pytest.fixture(scope="session")
def roberta_dir(tmp_path_factory) -> Path:
    """A 2-layer RoBERTa masked LM and its tokenizer (RoBERTa's specials and pair template)."""
    out = tmp_path_factory.mktemp("roberta")
    backend = bpe(["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    backend.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    tokenizer = RobertaTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>",
                                     sep_token="</s>", cls_token="<s>", unk_token="<unk>",
                                     pad_token="<pad>", mask_token="<mask>")
    tokenizer.save_pretrained(out)
    torch.manual_seed(0)
    RobertaForMaskedLM(RobertaConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=80, type_vocab_size=1, pad_token_id=1,
        bos_token_id=0, eos_token_id=2, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0)).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def llama_dir(tmp_path_factory) -> Path:
    return save_llama(tmp_path_factory.mktemp("llama"))


def save_llama(out: Path) -> Path:
    """A 2-layer LLaMA causal LM with a tokenizer as ablate saves one: an end-of-text token
    and no pad token (the GLUE task pads with end-of-text)."""
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe(["<|endoftext|>"]),
                                        eos_token="<|endoftext|>")
    tokenizer.save_pretrained(out)
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, max_position_embeddings=64, eos_token_id=0,
        tie_word_embeddings=False)).save_pretrained(out)
    return out


def glue_cfg(glue_dir: Path, model_dir: Path, name: str, *overrides: str):
    path = glue_dir / name
    files = {p.stem: str(p) for p in sorted(path.iterdir())}
    source = ([f"task.path={path}"] if name in ("sst2", "cola") else
              [f"task.path={'csv' if name == 'mrpc' else 'json'}",
               "task.data_files={" + ", ".join(f"{k}: '{v}'" for k, v in files.items()) + "}"])
    return compose(["task=glue", f"task.name={name}", *source, "task.config_name=null",
                    "task.val_size=16", f"model.pretrained={model_dir}", "trainer.seq_len=32",
                    "trainer.batch_size=8", "trainer.max_steps=4", "trainer.warmup_steps=1",
                    "trainer.log_interval=1", "trainer.eval_interval=0", "trainer.device=cpu",
                    "trainer.progress=false", "logger.wandb.mode=disabled", "trainer.lr=1e-3",
                    *overrides])


def one_by_one(model, tokenizer, rows: list[dict], columns: tuple[str, ...],
               regression: bool) -> list:
    """Predictions from one unpadded example at a time: the reference for the batched,
    padded evaluation."""
    model.eval()
    predictions = []
    with torch.no_grad():
        for row in rows:
            enc = tokenizer(*(row[c] for c in columns), truncation=True, max_length=32,
                            return_tensors="pt")
            logits = model(**enc).logits[0].float()
            predictions.append(logits.item() if regression else logits.argmax().item())
    return predictions


def read_rows(path: Path) -> list[dict]:
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text().splitlines()]
    sep = "\t" if path.suffix == ".tsv" else ","
    head, *lines = path.read_text().splitlines()
    return [dict(zip(head.split(sep), line.split(sep))) for line in lines]


def test_sst2_classification_fine_tunes_a_llama_and_scores_as_sklearn(glue_dir, llama_dir):
    """A LLaMA classifier reads each row's last token that is not padding: the batched,
    right-padded evaluation must equal unpadded predictions."""
    trainer = Trainer(glue_cfg(glue_dir, llama_dir, "sst2", "trainer.lr=3e-3",
                               "trainer.max_steps=20"))
    result = trainer.fit(lambda record: None)
    assert result["status"] == "completed" and result["glue_metric"] == "accuracy"
    rows = read_rows(glue_dir / "sst2" / "validation.tsv")
    tokenizer = AutoTokenizer.from_pretrained(llama_dir)
    predictions = one_by_one(trainer.model, tokenizer, rows, ("sentence",), False)
    labels = [int(r["label"]) for r in rows]
    assert result["test_accuracy"] == pytest.approx(metrics.accuracy_score(labels, predictions))
    assert result["glue_score"] == result["test_accuracy"] > 0.8  # it learned (0.5: chance)
    assert {"val_loss", "val_accuracy", "test_loss"} <= result.keys()


def test_stsb_regression_fine_tunes_a_roberta_and_scores_as_scipy(glue_dir, roberta_dir):
    trainer = Trainer(glue_cfg(glue_dir, roberta_dir, "stsb", "trainer.lr=1e-2",
                               "trainer.max_steps=6"))
    with torch.no_grad():
        trainer.model.eval()
        before = trainer.task.evaluate(trainer.model, "val")["val_loss"]
        trainer.model.train()
    result = trainer.fit(lambda record: None)
    assert trainer.model.config.num_labels == 1 and result["glue_metric"] == "pearson"
    assert result["val_loss"] < 0.8 * before  # it learned (at least the labels' mean)
    rows = read_rows(glue_dir / "stsb" / "validation.jsonl")
    tokenizer = AutoTokenizer.from_pretrained(roberta_dir)
    predictions = one_by_one(trainer.model, tokenizer, rows, ("sentence1", "sentence2"), True)
    labels = [r["label"] for r in rows]
    assert result["test_pearson"] == pytest.approx(stats.pearsonr(predictions, labels)[0],
                                                   abs=1e-5)
    assert result["test_spearman"] == pytest.approx(stats.spearmanr(predictions, labels)[0],
                                                    abs=1e-5)
    errors = [(p - y) ** 2 for p, y in zip(predictions, labels)]
    assert result["test_loss"] == pytest.approx(sum(errors) / len(errors), rel=1e-4)


@pytest.mark.parametrize("name, columns, expected", [
    ("cola", ("sentence",), {"test_matthews_correlation": metrics.matthews_corrcoef}),
    ("mrpc", ("sentence1", "sentence2"), {"test_f1": metrics.f1_score,
                                          "test_accuracy": metrics.accuracy_score}),
])
def test_classification_metrics_equal_sklearn(glue_dir, llama_dir, name, columns, expected):
    """An untrained head's predictions, scored by the task and by scikit-learn."""
    task = load_task(glue_cfg(glue_dir, llama_dir, name))
    torch.manual_seed(1)
    model = AutoModelForSequenceClassification.from_pretrained(llama_dir, num_labels=2)
    with torch.no_grad():
        model.eval()
        result = task.evaluate(model, "test")
    rows = read_rows(next((glue_dir / name).glob("validation.*")))
    predictions = one_by_one(model, task.tokenizer, rows, columns, False)
    labels = [int(r["label"]) for r in rows]
    assert len(set(predictions)) == 2, "an untrained head that predicts one class tests less"
    for key, function in expected.items():
        assert result[key] == pytest.approx(function(labels, predictions))
    assert result["glue_score"] == result[next(iter(expected))]


def test_mnli_scores_matched_and_mismatched(glue_dir, llama_dir):
    task = load_task(glue_cfg(glue_dir, llama_dir, "mnli"))
    torch.manual_seed(2)
    model = AutoModelForSequenceClassification.from_pretrained(llama_dir, num_labels=3)
    with torch.no_grad():
        model.eval()
        result = task.evaluate(model, "test")
    for split, suffix in (("validation_matched", ""), ("validation_mismatched", "_mismatched")):
        rows = read_rows(glue_dir / "mnli" / f"{split}.jsonl")
        predictions = one_by_one(model, task.tokenizer, rows, ("premise", "hypothesis"), False)
        labels = [r["label"] for r in rows]
        assert result[f"test_accuracy{suffix}"] == pytest.approx(
            metrics.accuracy_score(labels, predictions))
    assert result["glue_metric"] == "accuracy"


def projected_names(cfg) -> set[str]:
    """The parameters the trainer's (unfused) GaLore optimizer projects."""
    return {name for group in Trainer(cfg).optimizer.param_groups if group["rank"] is not None
            for name in group["param_names"]}


def test_galore_projects_the_encoder_and_decoder_weights_not_heads_or_embeddings(
        glue_dir, roberta_dir, llama_dir):
    common = ("optimizer=galore_adamw", "optimizer.rank=4", "toggles.fused_backward=false")
    roberta = projected_names(glue_cfg(glue_dir, roberta_dir, "sst2", *common))
    assert roberta == {f"roberta.encoder.layer.{i}.{w}.weight" for i in range(2) for w in (
        "attention.self.query", "attention.self.key", "attention.self.value",
        "attention.output.dense", "intermediate.dense", "output.dense")}
    llama = projected_names(glue_cfg(glue_dir, llama_dir, "sst2", *common))
    assert llama == {f"model.layers.{i}.{w}.weight" for i in range(2) for w in (
        "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
        "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")}


def train_steps(cfg, steps: int = 2) -> Trainer:
    trainer = Trainer(cfg)
    while trainer.step < steps:
        trainer.train_step()
    return trainer


@pytest.mark.parametrize("model, optimizer", [
    ("llama_dir", "optimizer=adamw"), ("llama_dir", "optimizer=sgd"),
    ("llama_dir", "optimizer=lomo"), ("llama_dir", "optimizer=adalomo"),
    ("llama_dir", "optimizer=adalomo toggles.nmf=false toggles.adaptive_lr=false "
                  "toggles.grouped_norm=global"),
    ("llama_dir", "optimizer=galore_adamw optimizer.rank=4 toggles.projection=random "
                  "toggles.two_sided=true toggles.eight_bit=true"),
    ("roberta_dir", "optimizer=galore_adamw optimizer.rank=4"),
])
def test_every_optimizer_on_glue_fused_equals_unfused(glue_dir, request, model, optimizer,
                                                      monkeypatch):
    monkeypatch.setattr(torch.Tensor, "cuda", lambda self, *a, **k: self)  # lomo-optim's state
    model_dir = request.getfixturevalue(model)
    cfg = glue_cfg(glue_dir, model_dir, "stsb", *optimizer.split())
    unfused = cfg.copy()
    unfused.toggles.fused_backward = False
    fused, plain = train_steps(cfg), train_steps(unfused)
    for (name, p), q in zip(fused.model.named_parameters(), plain.model.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-6, msg=name)
    start = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=1)
    moved = [name for (name, p), q in zip(start.named_parameters(), fused.model.parameters())
             if not torch.equal(p, q)]
    assert any("layers.0" in name or "layer.0" in name for name in moved)


@pytest.mark.slow
def test_offline_chain_pretrain_save_then_glue_sweep_and_report(tmp_path, glue_dir, tiny_args):
    """llama_tiny pre-trained and saved by ablate (trainer.save_model=true), then fine-tuned
    on two local GLUE-format tasks in one sweep; the report's GLUE table averages them."""
    code, out, err = run_in_process(tmp_path, *tiny_args, "trainer.max_steps=2",
                                    "trainer.save_model=true")
    assert code == 0, err
    (run,) = run_dirs(tmp_path / "outputs" / "runs")
    code, out, err = run_in_process(
        tmp_path, "-m", "task=glue", "task.name=sst2,stsb", f"task.path={glue_dir}/${{task.name}}",
        "task.config_name=null", "task.val_size=16", f"model.pretrained={run / 'model'}",
        "trainer.seq_len=32", "trainer.batch_size=8", "trainer.max_steps=3",
        "trainer.warmup_steps=1", "trainer.eval_interval=0", "trainer.device=cpu",
        "trainer.progress=false", "logger.wandb.mode=disabled", "optimizer=adalomo")
    assert code == 0, err
    lines = [line for line in out.splitlines() if line.startswith("completed: ")]
    assert len(lines) == 2 and "glue_metric=accuracy glue_score=" in lines[0]
    assert "glue_metric=pearson glue_score=" in lines[1]
    (sweep,) = (tmp_path / "outputs" / "multirun").glob("*/*")
    scores = [json.loads((sweep / str(i) / "summary.json").read_text())["glue_score"]
              for i in (0, 1)]
    table = glue_table(read_jobs(sweep)[0])  # what report.md shows
    assert table[-3:-1] == ["| variant | sst2 | stsb | average |", "|---|---|---|---|"]
    assert table[-1] == (f"| `adalomo` | {fmt(scores[0])} (1) | "
                         f"{fmt(scores[1])} (1) | {fmt(sum(scores) / 2)} |")
