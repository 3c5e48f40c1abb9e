"""Every bad input of `python -m ablate` (single run and -m), `ablate.rerun` and `ablate.report`:
exit status 1, one line on stderr naming the key or value and what is allowed, no traceback,
and no new file anywhere under the working directory (a rejected run leaves no directory).

Rows run in this process (the same entry functions `python -m` calls), except those marked
`SUBPROCESS`, which start the real command as a user would."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from conftest import ablate, run_dirs, run_in_process
from test_glue import save_llama

SUBPROCESS = "subprocess"
TWO_GPUS = "in process, the machine seen as having two GPUs"
JSON_TASK = ["task=pretrain_hub_wikitext103", "task.path=json", "task.train_split=train",
             "task.val_split=train", "task.test_split=train"]
GLUE = ["task=glue", "task.config_name=null", "model.pretrained={tmp}/glue_model",
        "task.val_size=1"]
ALPACA = ["task=instruct_alpaca_gpt4", "task.path=json"]
HUB_OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
               "HF_DATASETS_DISABLE_PROGRESS_BARS": "1"}

# (module, arguments, what the line must say[, SUBPROCESS]). In the arguments, {run} is a
# completed tiny run, {tmp} a folder of prepared bad files, {file} a regular file.
ROWS = [
    # -------------------------------------------------- python -m ablate: types and keys
    ("ablate", ["trainer.max_steps=abc"], "trainer.max_steps=abc"),
    ("ablate", ["trainer.warmup_steps=1.5"], "trainer.warmup_steps=1.5"),
    ("ablate", ["trainer.lr=abc"], "trainer.lr=abc"),
    ("ablate", ["toggles.fused_backward=maybe"], "toggles.fused_backward=maybe"),
    ("ablate", ["resume=maybe"], "resume=maybe"),
    ("ablate", ["resume_from=/x"], "resume_from=/x"),
    ("ablate", ["trainer.device=gpu"], "expected one of [auto, cpu, cuda]"),
    ("ablate", ["trainer.precision=fp8"], "expected one of [fp32, bf16, bf16_weights]"),
    ("ablate", ["trainer.schedule=exp"], "expected one of [cosine, linear, constant]"),
    ("ablate", ["logger.wandb.mode=bogus"], "expected one of [offline, online, disabled]"),
    ("ablate", ["optimizer=nope"], "allowed optimizer options: adafactor, adalomo, adam_mini, adamw,"),
    ("ablate", ["model=nope"], "allowed model options: gpt2_large"),
    ("ablate", ["toggles=nope"], "allowed toggles options: all"),
    ("ablate", ["+ablation=nope"], "allowed ablation options: adalomo_adaptive_lr"),
    ("ablate", ["hydra/launcher=nope"], "allowed hydra/launcher options: basic"),
    ("ablate", ["nonsense"], "Error parsing override 'nonsense'"),
    ("ablate", ["trainer.nope=1"], "trainer.nope: unknown key (allowed under trainer: max_steps"),
    ("ablate", ["+trainer.foo=1"], "trainer.foo: unknown key (allowed under trainer: max_steps"),
    ("ablate", ["+foo=1"], "foo: unknown key (allowed under the top level: outputs_dir"),
    ("ablate", ["+optimizer.foo=1"], "optimizer.foo: unknown key (allowed under optimizer: name"),
    ("ablate", ["+model.z=1"], "model.z: unknown key"),
    ("ablate", ["optimizer.betas=[0.9]"], "optimizer.betas=[0.9]: must be a list of 2 numbers"),
    ("ablate", ["optimizer=adalomo", "optimizer.eps=[1e-30]"], "optimizer.eps=[1e-30]: must be a"),
    # -------------------------------------------------- ranges and non-finite numbers
    ("ablate", ["trainer.seed=-1"], "trainer.seed=-1: must be in [0, 2**32 - 1]"),
    ("ablate", ["trainer.lr=inf"], "trainer.lr=inf: must be a finite number"),
    ("ablate", ["trainer.lr=-inf"], "trainer.lr=-inf: must be a finite number"),
    ("ablate", ["trainer.clip_grad_norm=nan"], "trainer.clip_grad_norm=nan: must be a finite"),
    ("ablate", ["optimizer.eps=nan"], "optimizer.eps=nan: must be a finite number"),
    ("ablate", ["trainer.min_lr_ratio=2"], "trainer.min_lr_ratio=2.0: must be in [0, 1]"),
    ("ablate", ["trainer.lr=0"], "trainer.lr=0.0: must be > 0"),
    ("ablate", ["trainer.batch_size=0"], "trainer.batch_size=0: must be > 0"),
    ("ablate", ["trainer.max_steps=-1"], "trainer.max_steps=-1: must be >= 0"),
    ("ablate", ["trainer.checkpoint_every=-5"], "trainer.checkpoint_every=-5: must be >= 0"),
    ("ablate", ["trainer.seq_len=100000"], "trainer.seq_len=100000: must be <= model.max_seq_len"),
    ("ablate", ["model.max_seq_len=-1"], "model.max_seq_len=-1: must be > 0"),
    ("ablate", ["model.hidden_size=65"], "model.hidden_size=65: must be divisible by"),
    ("ablate", ["model.arch=bert"], "model.arch=bert: allowed are llama, gpt2"),
    ("ablate", ["task.vocab_size=10"], "task.vocab_size=10: must be >= 257"),
    ("ablate", ["task.heldout_every=0"], "task.heldout_every=0: must be >= 2"),
    ("ablate", ["task.heldout_every=1"], "task.heldout_every=1: must be >= 2"),
    ("ablate", ["trainer.grad_accum_steps=2", "trainer.clip_grad_norm=1"],
     "needs trainer.grad_accum_steps=1"),
    ("ablate", ["optimizer.weight_decay=-1"], "optimizer=adamw: weight_decay=-1.0: must be >= 0"),
    ("ablate", ["toggles=no_nmf"], "toggle toggles.nmf is not supported by optimizer=adamw"),
    ("ablate", ["optimizer=galore_adamw", "optimizer.rank=0"], "rank=0: must be > 0"),
    ("ablate", ["optimizer=galore_adamw", "optimizer.rank=1000"], "rank=1000: must be <="),
    ("ablate", ["optimizer=galore_adamw", "optimizer.target_modules=[zzz]"],
     "optimizer.target_modules=['zzz']: matches no 2-D weight of model llama_tiny (its weights: "),
    ("ablate", ["+ablation=galore_rank", "ablation.variant=x"],
     "ablation.variant=x: allowed are none (preset galore_rank has no variants)"),
    ("ablate", ["resume_from=[{tmp}/nowhere]"], "resume_from: "),
    # -------------------------------------------------- data and paths
    ("ablate", ["trainer.eval_batches=100000"],
     "trainer.eval_batches=100000: the val split has"),
    ("ablate", ["task.include=[nothing*.zz]"], "task.include=['nothing*.zz']: matches no file"),
    ("ablate", [*JSON_TASK, "task.data_files={tmp}/missing.json"],
     "/missing.json: FileNotFoundError: Unable to find"),
    ("ablate", [*JSON_TASK, "task.data_files={tmp}/empty.json"], "empty.json: empty file"),
    ("ablate", [*JSON_TASK, "task.data_files={tmp}/blank.json"],
     "task pretrain_hub_wikitext103: the train split holds no text"),
    ("ablate", ["task=pretrain_hub_wikitext103"], "task.path=wikitext (split train): cannot be",
     SUBPROCESS),
    ("ablate", ["outputs_dir=/proc/nope"], "outputs_dir: cannot write the run directory"),
    ("ablate", ["outputs_dir={file}"], "outputs_dir: cannot write the run directory"),
    # -------------------------------------------------- python -m ablate -m (sweeps)
    ("ablate", ["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=0"],
     "hydra.launcher.n_jobs=0: must be >= 1", SUBPROCESS),
    ("ablate", ["-m", "+ablation=galore_rank", "ablation.variant=x"],
     "ablation.variant=x: allowed are none"),
    ("ablate", ["-m", "trainer.seed=0,-1"],
     "trainer.seed=-1: must be in [0, 2**32 - 1] (job #1 of the sweep: trainer.seed=-1)"),
    ("ablate", ["-m", "trainer.lr=1e-3,inf"], "trainer.lr=inf: must be a finite number"),
    ("ablate", ["-m", "trainer.eval_batches=2,100000"], "trainer.eval_batches=100000: the val"),
    ("ablate", ["-m", "+trainer.foo=1"], "trainer.foo: unknown key"),
    ("ablate", ["-m", "trainer.nope=1"], "trainer.nope: unknown key (allowed under trainer: "),
    ("ablate", ["-m", "optimizer=adamw,nope"], "allowed optimizer options"),
    ("ablate", ["-m", "optimizer=galore_adamw", "optimizer.rank=4,1000"], "rank=1000: must be"),
    ("ablate", ["-m", "outputs_dir=/proc/nope"], "outputs_dir: cannot write the run directory"),
    # -------------------------------------------------- python -m ablate.rerun
    ("ablate.rerun", [], "usage: python -m ablate.rerun RUN_DIR"),
    ("ablate.rerun", ["{tmp}/missing"], "config.yaml not found (RUN_DIR must be a job's"),
    ("ablate.rerun", ["{tmp}/corrupt"], "config.yaml: not readable as YAML", SUBPROCESS),
    ("ablate.rerun", ["{tmp}/binary"], "config.yaml: not readable as YAML"),
    ("ablate.rerun", ["{tmp}/listed"], "config.yaml: not a job's config (a mapping with"),
    ("ablate.rerun", ["{run}", "trainer.foo=1"], "trainer.foo"),
    ("ablate.rerun", ["{run}", "+trainer.foo=1"], "trainer.foo: Key 'foo' not in 'TrainerConfig'"),
    ("ablate.rerun", ["{run}", "trainer.lr=abc"], "trainer.lr: Value 'abc'"),
    ("ablate.rerun", ["{run}", "trainer.seed=-1"], "trainer.seed=-1: must be in"),
    ("ablate.rerun", ["{run}", "optimizer=sgd"], "optimizer=sgd: a rerun keeps the saved config"),
    ("ablate.rerun", ["{run}", "trainer.eval_batches=100000"], "trainer.eval_batches=100000"),
    ("ablate.rerun", ["{run}", "outputs_dir=/proc/nope"], "outputs_dir: cannot write"),
    # -------------------------------------------------- tuning and preset seeds
    ("ablate", ["trainer.lr_factor=0"], "trainer.lr_factor=0.0: must be > 0"),
    ("ablate", ["trainer.lr_factor=inf"], "trainer.lr_factor=inf: must be a finite number"),
    ("ablate", ["+tune=lr", "tune.lr_factors=[]"], "tune.lr_factors=[]: must be distinct"),
    ("ablate", ["+tune=lr", "tune.lr_factors=[1,1]"], "tune.lr_factors=[1.0, 1.0]: must be"),
    ("ablate", ["+tune=lr", "tune.lr_factors=[-1,2]"], "tune.lr_factors=[-1.0, 2.0]: must be"),
    ("ablate", ["+tune=lr", "tune.lr_factors=abc"], "tune.lr_factors=abc"),
    ("ablate", ["+tune=lr", "tune.grid_seed=-1"], "tune.grid_seed=-1: must be >= 0"),
    ("ablate", ["+tune=nope"], "allowed tune options: lr"),
    ("ablate", ["+ablation=adalomo_nmf", "ablation.seeds=[-1]"],
     "ablation.seeds=[-1]: must be distinct integers >= 0"),
    ("ablate", ["+ablation=adalomo_nmf", "ablation.seeds=[]"], "ablation.seeds=[]: must be"),
    # -------------------------------------------------- python -m ablate.report
    ("ablate.report", [], "the following arguments are required: sweep_dir"),
    ("ablate.report", ["{tmp}/missing"], "is not a directory"),
    ("ablate.report", ["{tmp}/cut"], "/cut/0: summary.json: not readable as JSON"),
    ("ablate.report", ["{tmp}/empty"], "summary.json: not a job summary (a JSON object with"),
    ("ablate.report", ["{tmp}/list"], "summary.json: not a job summary", SUBPROCESS),
    ("ablate.report", ["{tmp}/nothing"], "no job (summary.json or .hydra/) under"),
    ("ablate.report", ["{run}", "--out", "/proc/nope"], "(--out /proc/nope must be a writable"),
    ("ablate.report", ["{run}", "--out", "{file}"], "must be a writable directory"),
    ("ablate.report", ["{run}", "--loss-target", "abc"], "--loss-target: invalid float value"),
    ("ablate.report", ["{run}", "--loss-target", "-1"], "--loss-target -1.0: must be a loss > 0"),
    ("ablate.report", ["{run}", "--loss-target", "nan"], "--loss-target nan: must be a loss > 0"),
    ("ablate.report", ["{run}", "--baseline", "zzz"], "--baseline 'zzz' matches no variant"),
    ("ablate.report", ["{run}", "--bogus"], "unrecognized arguments: --bogus"),
    # -------------------------------------------------- tasks (issue 14)
    ("ablate", ["task.kind=nope"], "task.kind=nope: Invalid value 'nope', expected one of"),
    ("ablate", ["model.pretrained=nobody/no-such-model"],
     "model.pretrained=nobody/no-such-model: not a local directory, and not in the local "
     "Hugging Face cache (offline: HF_HUB_OFFLINE=1)", SUBPROCESS),
    ("ablate", ["model.pretrained={tmp}/nowhere/model"], "/nowhere/model: no such directory"),
    ("ablate", ["model.pretrained={tmp}/nothing"], "a directory without a transformers config"),
    ("ablate", ["model.pretrained={tmp}/added_tokens"],
     "the task's tokenizer has 612 tokens, more than the model's vocabulary of 512"),
    ("ablate", ["task=instruct_alpaca_gpt4", "task.path=json",
                "task.data_files={tmp}/no_output.jsonl"],
     "/no_output.jsonl: no column 'output' (an Alpaca-format record has instruction, input"),
    ("ablate", ["trainer.save_model=maybe"], "trainer.save_model=maybe"),
    ("ablate", ["task=instruct_alpaca_gpt4", "task.max_records=0"],
     "task.max_records=0: must be >= 1"),
    ("ablate", ["task=instruct_local", "task.template.prompt_no_input='{{nope}}'"],
     "task.template.prompt_no_input: cannot be filled (KeyError: 'nope')"),
    # -------------------------------------------------- precision, checkpointing, GPUs per job
    ("ablate", ["trainer.activation_checkpointing=maybe"], "trainer.activation_checkpointing=maybe"),
    ("ablate", ["share_gpus=maybe"], "share_gpus=maybe"),
    ("ablate", ["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=3"],
     "hydra.launcher.n_jobs=3: more parallel jobs than the 2 GPU(s) here (allowed: at most 2",
     TWO_GPUS),
    # -------------------------------------------------- GLUE (task=glue, ablate/tasks/glue.py)
    ("ablate", ["task=glue", "task.path={tmp}/glue_ok"], "task=glue fine-tunes a pretrained "
     "model: set model.pretrained"),
    ("ablate", [*GLUE, "task.path={tmp}/glue_ok", "task.name=boolq"],
     "task.name=boolq: not a GLUE task (allowed: cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte)"),
    ("ablate", [*GLUE, "task.name=mrpc", "task.path={tmp}/glue_mrpc"],
     "glue_mrpc/train.csv: no column 'sentence2' (its columns: sentence1, label); GLUE mrpc "
     "needs sentence1, sentence2, label"),
    ("ablate", [*GLUE, "task.path={tmp}/glue_sst2"],
     "glue_sst2/train.tsv: label 7 in row 2 is out of range (allowed: an integer in 0..1)"),
    ("ablate", [*GLUE, "task.name=stsb", "task.path=json",
                "task.data_files={{train: '{tmp}/stsb_text_label.jsonl', "
                "validation: '{tmp}/stsb_text_label.jsonl'}}"],
     "stsb_text_label.jsonl: label 'high' in row 1 is out of range (allowed: a number in "
     "0.0..5.0)"),
    ("ablate", [*GLUE, "task.path={tmp}/glue_empty_cell"],
     "glue_empty_cell/train.csv: sentence in row 2 is '', not text"),
    ("ablate", [*GLUE, "task.name=mnli", "task.path={tmp}/glue_sst2"],
     "has no validation_matched split (its splits: train, validation)"),
    ("ablate", [*GLUE, "task.path={tmp}/nothing"],
     "/nothing: EmptyDatasetError: The directory at"),
    ("ablate", [*GLUE, "task.path={tmp}/glue_ok", "task.val_size=100"],
     "task.val_size=100: must be in 1..3 (the train split has 4 examples)"),
    ("ablate", [*GLUE, "task.path={tmp}/glue_ok", "task.max_eval_examples=0"],
     "task.max_eval_examples=0: must be >= 1"),
    # -------------------------------------------------- one job on several processes
    ("ablate", ["trainer.processes=0"], "trainer.processes=0: must be >= 1"),
    ("ablate", ["trainer.processes=-2"], "trainer.processes=-2: must be >= 1"),
    ("ablate", ["trainer.processes=4096"], "trainer.processes=4096: more than the"),
    ("ablate", ["trainer.processes=two"], "trainer.processes=two"),
    ("ablate", ["trainer.bucket_mb=0"], "trainer.bucket_mb=0.0: must be > 0"),
    ("ablate", ["trainer.buckets_in_flight=0"], "trainer.buckets_in_flight=0: must be > 0"),
    ("ablate", ["trainer.buckets_in_flight=1.5"], "trainer.buckets_in_flight=1.5"),
    ("ablate", ["trainer.collective_timeout_s=-1"], "trainer.collective_timeout_s=-1.0: must be"),
    ("ablate", ["-m", "trainer.processes=1,0"], "trainer.processes=0: must be >= 1"),
    # -------------------------------------------------- issue 21: config
    ("ablate", ["trainer.activation_checkpointing=2"],
     "trainer.activation_checkpointing=2: must be true or false"),
    ("ablate", ["share_gpus=2"], "share_gpus=2: must be true or false"),
    ("ablate", ["resume=1"], "resume=1: must be true or false"),
    ("ablate", ["-m", "toggles.fused_backward=true,2"],
     "toggles.fused_backward=2: must be true or false"),
    ("ablate", ["toggles.two_sided=1"], "toggles.two_sided=1: must be true, false or null"),
    ("ablate", ["ablation.seeds=[0,1]"], "ablation.seeds=[0,1]: sets a key of the ablation "
     "group, which this command does not add: add +ablation=NAME (allowed ablation options: "
     "adalomo_adaptive_lr"),
    ("ablate", ["-m", "ablation.seeds=[0,1]"], "add +ablation=NAME"),
    ("ablate", ["tune.lr_factors=[1]"], "tune.lr_factors=[1]: sets a key of the tune group, "
     "which this command does not add: add +tune=lr (allowed tune options: lr)"),
    ("ablate", ["ablation.variant=x"], "ablation.variant=x: sets a key of the ablation group"),
    ("ablate", ["ablation=adalomo_nmf"], "ablation=adalomo_nmf: ablation is not in the default "
     "config: add it with +ablation=adalomo_nmf"),
    ("ablate", ["-m", "tune=lr"], "add it with +tune=lr"),
    ("ablate", ["trainer.foo=1"], "trainer.foo: unknown key (allowed under trainer: max_steps"),
    ("ablate", ["optimizer.foo=1"],
     "optimizer.foo: unknown key (allowed under optimizer: name, lr, betas, eps, weight_decay)"),
    ("ablate", ["task.zz=1"], "task.zz: unknown key (allowed under task: kind, name"),
    ("ablate", ["+tune=lr", "tune.foo=1"], "tune.foo: unknown key (allowed under tune: "),
    ("ablate", ["-m", "+tune=lr", "tune.lr_factors=[]"], "tune.lr_factors=[]: must be distinct"),
    ("ablate", ["-m", "+ablation=adalomo_nmf", "ablation.seeds=[]"],
     "ablation.seeds=[]: must be distinct integers"),
    ("ablate.estimate", ["--bogus"], "ablate.estimate: error: unrecognized arguments: --bogus"),
    ("ablate.estimate", ["--accounting", "x"], "argument --accounting: invalid choice: 'x'"),
    ("ablate.estimate", ["--table", "optimizer=adamw,sgd", "toggles=no_nmf"],
     "--table: every one of the 2 combinations is skipped (toggle toggles.nmf is not"),
    ("ablate.estimate", ["trainer.activation_checkpointing=2"], "must be true or false"),
    ("ablate.estimate", ["trainer.foo=1"], "trainer.foo: unknown key (allowed under trainer"),
    ("ablate", ["model.pretrained={tmp}/corrupt_config"], "/corrupt_config: its config.json is "
     "not one transformers reads (It looks like the config file at"),
    ("ablate", ["model.pretrained={tmp}/unknown_type"], "/unknown_type: its config.json is not "
     "one transformers reads (The checkpoint you are trying to load has model type `zzz`"),
    ("ablate", ["model.pretrained={tmp}/seq2seq"],
     "/seq2seq: transformers has no causal-LM model for its model_type t5"),
    ("ablate", ["model.pretrained={tmp}/garbage_weights"],
     "/garbage_weights: cannot load its weights (SafetensorError"),
    ("ablate", ["task.cache_dir={file}/cache"], "/file/cache: cannot be written (/"),
    ("ablate", [*GLUE, "task.path={tmp}/glue_ok", "task.cache_dir={file}/c"],
     "/file/c: cannot be written ("),
    # -------------------------------------------------- issue 21: report inputs
    ("ablate.report", ["{tmp}/status5"], "/status5/0: summary.json: status 5 is not one of"),
    ("ablate.report", ["{tmp}/strings"], "/strings/0: metrics.jsonl line 1: loss 'abc' is not"),
    # -------------------------------------------------- issue 21: GLUE files
    ("ablate", [*GLUE, "task.path={tmp}/glue_split_column"],
     "glue_split_column/validation.tsv: no column 'sentence' (its columns: text, label)"),
    ("ablate", [*GLUE, "task.path={tmp}/glue_empty_file"], "glue_empty_file/train.tsv: empty file"),
    ("ablate", [*GLUE, "task.path={tmp}/glue_header_only"],
     "glue_header_only/train.tsv: a header and no rows"),
    ("ablate", [*GLUE, "task.path={tmp}/glue_binary"], "glue_binary/train.tsv: not UTF-8 text"),
    ("ablate", [*GLUE, "task.path={tmp}/glue_float_label"], "glue_float_label/train.tsv: label "
     "'1.5' in row 2 is out of range (allowed: an integer in 0..1)"),
    ("ablate", [*GLUE, "task.path={tmp}/glue_empty_label"],
     "glue_empty_label/train.tsv: label '' in row 3 is out of range"),
    ("ablate", [*GLUE, "task.path={tmp}/glue_fields"],
     "glue_fields/train.csv: row 2 has 3 fields, its header 2 (sentence, label)"),
    ("ablate", [*GLUE, "task.path={tmp}/glue_null"],
     "glue_null/train.jsonl: sentence in row 2 is None, not text"),
    ("ablate", [*GLUE, "task.path={tmp}/glue_int"],
     "glue_int/train.jsonl: sentence in row 1 is 5, not text"),
    ("ablate", [*GLUE, "task.path={tmp}/glue_list"],
     "glue_list/train.jsonl: sentence in row 3 is ['a'], not text"),
    ("ablate", [*GLUE, "task.path={tmp}/glue_not_object"],
     "glue_not_object/train.jsonl: row 2 is list [1, 2], not a JSON object"),
    ("ablate", [*GLUE, "task.path={tmp}/glue_cut"], "glue_cut/train.jsonl: row 2 is not JSON"),
    ("ablate", [*GLUE, "task.name=stsb", "task.path={tmp}/stsb_high"],
     "stsb_high/train.jsonl: label 7 in row 2 is out of range (allowed: a number in 0.0..5.0)"),
    ("ablate", [*GLUE, "task.name=stsb", "task.path={tmp}/stsb_low"],
     "stsb_low/validation.jsonl: label -2.5 in row 1 is out of range"),
    # -------------------------------------------------- issue 21: instruction files
    ("ablate", [*ALPACA, "task.data_files={tmp}/no_instruction_column.jsonl"],
     "no_instruction_column.jsonl: no column 'instruction'"),
    ("ablate", [*ALPACA, "task.data_files={tmp}/no_instruction.jsonl"],
     "no_instruction.jsonl: instruction in row 2 is missing, not non-empty text"),
    ("ablate", [*ALPACA, "task.data_files={tmp}/null_instruction.jsonl"],
     "null_instruction.jsonl: instruction in row 1 is null, not non-empty text"),
    ("ablate", [*ALPACA, "task.data_files={tmp}/int_output.jsonl"],
     "int_output.jsonl: output in row 3 is 5, not text"),
    ("ablate", [*ALPACA, "task.data_files={tmp}/list_input.jsonl"],
     "list_input.jsonl: input in row 2 is [\"a\"], not text"),
    ("ablate", [*ALPACA, "task.data_files={tmp}/empty_outputs.jsonl"],
     "empty_outputs.jsonl: every output is empty"),
    ("ablate", [*ALPACA, "task.data_files={tmp}/empty.json"], "empty.json: empty file"),
    ("ablate", [*ALPACA, "task.data_files={tmp}/binary.jsonl"], "binary.jsonl: not UTF-8 text"),
    ("ablate", [*ALPACA, "task.data_files={{validation: '{tmp}/empty_outputs.jsonl'}}"],
     "has no split train (its splits: validation; task.split names the one read)"),
    ("ablate", ["task=instruct_local", "task.template.prompt_no_input=Say:"],
     "task.template.prompt_no_input: has no {instruction} field"),
    ("ablate", ["task=instruct_local", "task.template.prompt_input='{{instruction}}'"],
     "task.template.prompt_input: has no {input} field"),
    # -------------------------------------------------- issue 21: pre-training files
    ("ablate", [*JSON_TASK, "task.data_files={tmp}/null_text.jsonl"],
     "null_text.jsonl: text in row 2 is null, not text"),
    ("ablate", [*JSON_TASK, "task.data_files={tmp}/no_output.jsonl"],
     "task.text_field=text: not a field of"),
    ("ablate", [*JSON_TASK, "task.data_files={tmp}/binary.jsonl"], "binary.jsonl: not UTF-8"),
    ("ablate", [*JSON_TASK, "task.data_files={tmp}/header_only.csv"],
     "header_only.csv: a header and no rows"),
    # -------------------------------------------------- issue 23: APOLLO, Adam-mini, Muon
    ("ablate", ["optimizer=apollo", "optimizer.rank=0"], "rank=0: must be > 0"),
    ("ablate", ["optimizer=apollo", "optimizer.rank=1000"], "rank=1000: must be <= min(rows"),
    ("ablate", ["optimizer=apollo", "optimizer.update_proj_gap=0"],
     "update_proj_gap=0: must be > 0"),
    ("ablate", ["optimizer=apollo", "optimizer.scale=0"], "scale=0.0: must be > 0"),
    ("ablate", ["optimizer=apollo", "optimizer.scaling=row"],
     "expected one of [channel, tensor]"),
    ("ablate", ["optimizer=apollo", "optimizer.eps=-1"], "eps=-1.0: must be >= 0"),
    ("ablate", ["optimizer=apollo_mini", "optimizer.betas=[0.9,1.5]"],
     "betas=[0.9, 1.5]: must be two numbers in [0, 1)"),
    ("ablate", ["optimizer=apollo", "toggles.projection=pca"],
     "projection=pca: allowed for APOLLO are random, svd, none"),
    ("ablate", ["optimizer=apollo", "toggles.limiter=maybe"], "toggles.limiter=maybe"),
    ("ablate", ["toggles=no_limiter"], "toggle toggles.limiter is not supported by optimizer="
                                       "adamw"),
    ("ablate", ["optimizer=adam_mini", "optimizer.num_heads=0"], "num_heads=0: must be > 0"),
    ("ablate", ["optimizer=adam_mini", "optimizer.num_heads=5"],
     "num_heads=5: model.layers.0.self_attn.q_proj.weight with shape (64, 64) does not split"),
    ("ablate", ["optimizer=adam_mini", "optimizer.weight_decay=-1"],
     "weight_decay=-1.0: must be >= 0"),
    ("ablate", ["optimizer=adam_mini", "toggles.partition=row"],
     "expected one of [head, neuron, tensor]"),
    ("ablate", ["toggles=tensor_partition"], "toggle toggles.partition is not supported by"),
    ("ablate", ["optimizer=muon", "optimizer.ns_steps=0"], "ns_steps=0: must be in [1, 99]"),
    ("ablate", ["optimizer=muon", "optimizer.ns_coefficients=[1,2]"],
     "optimizer.ns_coefficients=[1.0, 2.0]: must be a list of 3 numbers"),
    ("ablate", ["optimizer=muon", "optimizer.ns_dtype=float16"],
     "expected one of [bfloat16, float32]"),
    ("ablate", ["optimizer=muon", "optimizer.momentum=1.0"], "momentum=1.0: must be in [0, 1)"),
    ("ablate", ["optimizer=muon", "optimizer.eps=-1"], "eps=-1.0: must be >= 0"),
    ("ablate", ["optimizer=muon", "optimizer.adjust_lr_fn=x"],
     "expected one of [original, match_rms_adamw]"),
    ("ablate", ["optimizer=muon", "optimizer.adamw_lr_ratio=0"], "adamw_lr_ratio=0.0: must be"),
    ("ablate", ["optimizer=muon", "optimizer.adamw_betas=[0.9,1.0]"],
     "adamw_betas=[0.9, 1.0]: must be two numbers in [0, 1)"),
    ("ablate", ["optimizer=muon", "optimizer.adamw_eps=-1"], "adamw_eps=-1.0: must be >= 0"),
    ("ablate", ["optimizer=muon", "optimizer.adamw_weight_decay=-1"],
     "adamw_weight_decay=-1.0: must be >= 0"),
    ("ablate", ["optimizer=muon", "toggles.nesterov=maybe"], "toggles.nesterov=maybe"),
    ("ablate", ["toggles=no_nesterov"], "toggle toggles.nesterov is not supported by"),
    # -------------------------------------------------- issue 26 claims
    ("ablate", ["-m", "+ablation=adam_components", "ablation.seeds=[0]",
                "ablation.claims=[{{variant: adamw, against: sgd, expect: worse}}]"],
     "ablation.claims[0].variant=adamw: not a variant of the preset (allowed: baseline, adam, "
     "no_momentum, no_second_moment, sgd)"),
    ("ablate", ["+ablation=adalomo_vs_adamw",
                "ablation.claims=[{{variant: adalomo, against: adamw, expect: equivalent}}]"],
     "ablation.claims[0].margin=None: expect=equivalent needs a margin > 0"),
    ("ablate", ["+ablation=adalomo_vs_adamw",
                "ablation.claims=[{{variant: lomo, against: adamw, expect: not_worse, margin: -1}}]"],
     "ablation.claims[0].margin=-1: expect=not_worse needs a margin > 0"),
    ("ablate", ["+ablation=adalomo_decay_rate",
                "ablation.claims=[{{variant: baseline, against: beta2_0.999, expect: faster}}]"],
     "ablation.claims[0].expect=faster: allowed are worse, better, equivalent, not_worse"),
    ("ablate", ["+ablation=adalomo_decay_rate", "ablation.claims=[{{variant: baseline, "
                "against: beta2_0.999, expect: worse, metric: mmlu}}]"],
     "ablation.claims[0].metric=mmlu: allowed are test_loss"),
    ("ablate", ["+ablation=adalomo_decay_rate", "ablation.claims=[{{variant: baseline, "
                "against: beta2_0.999, expect: worse, margin: 0.1}}]"],
     "ablation.claims[0].margin=0.1: only equivalent and not_worse take a margin"),
    ("ablate", ["+ablation=adalomo_decay_rate", "ablation.claims=[{{variant: baseline, "
                "against: beta2_0.999, expects: worse}}]"],
     "ablation.claims[0].expects: unknown key (allowed: variant, against, expect, margin,"),
    # -------------------------------------------------- issue 24: thread budget
    ("ablate", ["trainer.threads=-1"], "trainer.threads=-1: must be >= 0"),
    ("ablate", ["trainer.threads=two"], "trainer.threads=two"),
    ("ablate", ["-m", "trainer.threads=1,-2"], "trainer.threads=-2: must be >= 0"),
    # -------------------------------------------------- issue 26 baselines
    ("ablate", ["adapter=lora", "adapter.target_modules=[query,value]"],
     "adapter.target_modules=['query', 'value']: matches no module of model llama_tiny"),
    ("ablate", ["adapter=lora", "adapter.rank=65"],
     "adapter.rank=65: larger than model.layers.0.self_attn.q_proj's dimensions [64, 64]"),
    ("ablate", ["adapter=lora", "adapter.rank=0"], "adapter.rank=0: must be >= 1"),
    ("ablate", ["adapter=lora", "adapter.dropout=1.0"],
     "adapter.dropout=1.0: must be in [0, 1)"),
    ("ablate", ["adapter=relora", "adapter.restart_every=0"], "adapter.restart_every=0"),
    ("ablate", ["adapter.name=dora"], "adapter.name=dora: allowed are none, lora"),
    ("ablate", ["adapter=qlora"], "Could not find 'adapter/qlora'; allowed adapter options"),
    ("ablate", ["adapter.rank=abc"], "adapter.rank=abc"),
    ("ablate", ["optimizer=adafactor", "optimizer.d=0.5"],
     "optimizer=adafactor: d=0.5: must be >= 1"),
    ("ablate", ["optimizer=adafactor", "optimizer.beta2=1.0"], "beta2=1.0: must be in [0, 1)"),
    ("ablate", ["optimizer=adafactor", "optimizer.beta2_decay=0.5"],
     "beta2_decay=0.5: must be <= 0"),
    ("ablate", ["optimizer=adafactor", "optimizer.eps=[null,-1]"], "eps=[None, -1.0]"),
    ("ablate", ["optimizer=adafactor", "optimizer.eps=[1e-30,1e-3]"],
     "eps=[1e-30, 0.001]: must be (eps1 >= 1.08e-19 or null"),
    ("ablate", ["optimizer=adafactor", "optimizer.factored=maybe"],
     "optimizer.factored=maybe"),
    ("ablate", ["optimizer=adamw8bit", "optimizer.min_8bit_size=-1"],
     "min_8bit_size=-1: must be >= 0"),
    ("ablate", ["optimizer=adamw8bit", "optimizer.betas=[0.9,1.0]"], "betas=[0.9, 1.0]"),
    # -------------------------------------------------- issue 22: trainer.sharding=fsdp
    ("ablate", ["trainer.sharding=zero3"], "trainer.sharding=zero3"),
    ("ablate", ["trainer.sharding=fsdp", "trainer.precision=bf16_weights"],
     "trainer.precision=bf16_weights with trainer.sharding=fsdp: not supported"),
    ("ablate", ["trainer.sharding=fsdp", "trainer.processes=2", "model.hidden_size=1",
                "model.num_heads=1"],
     "trainer.processes=2 with trainer.sharding=fsdp: the smallest parameter has 1 rows, too "
     "few to give each process one (allowed: at most 1 processes)"),
    # issue 22 (h-shard): every optimizer shards; 8-bit states only in whole blocks; LoRA
    ("ablate", ["trainer.sharding=fsdp", "adapter=relora"],
     "adapter=relora with trainer.sharding=fsdp: not supported (its restarts merge"),
    ("ablate", ["trainer.sharding=fsdp", "adapter=lora", "trainer.save_model=true"],
     "trainer.save_model=true with adapter=lora and trainer.sharding=fsdp: not supported"),
    ("ablate", ["trainer.sharding=fsdp", "trainer.processes=2", "optimizer=adamw8bit",
                "optimizer.min_8bit_size=0"],
     "trainer.sharding=fsdp: optimizer=adamw8bit: model.layers.0.input_layernorm.weight: its "
     "8-bit states of shape (64,) do not split over 2 processes into whole 256-value blocks"),
    ("ablate", ["trainer.sharding=fsdp", "trainer.processes=2", "optimizer=galore_adamw",
                "optimizer.rank=40", "toggles.eight_bit=true", "model.intermediate_size=120"],
     "model.layers.0.mlp.gate_proj.weight: its 8-bit states of shape (120, 40) do not split "
     "over 2 processes"),
    # -------------------------------------------------- issue 24: multi-tensor updates
    ("ablate", ["trainer.foreach=maybe"], "trainer.foreach=maybe: must be true or false"),
    ("ablate", ["-m", "trainer.foreach=true,2"], "trainer.foreach=2: must be true or false"),
]
if shutil.which("sbatch") is None:
    ROWS.append(("ablate", ["-m", "hydra/launcher=submitit_slurm"],
                 "hydra/launcher=submitit_slurm: no SLURM here"))


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, cache_dir):
    """A completed tiny run, and bad files of every kind the rows name."""
    root = tmp_path_factory.mktemp("prepared")
    tiny = tiny_overrides(cache_dir)
    code, _, err = run_in_process(root, *tiny, "trainer.max_steps=1", "trainer.save_model=true")
    assert code == 0, err
    (run,) = run_dirs(root / "outputs" / "runs")
    bad = root / "bad"
    for name, text in [("corrupt", "optimizer: {name: [\n"), ("listed", "[1, 2]\n")]:
        (bad / name / ".hydra").mkdir(parents=True)
        (bad / name / ".hydra" / "config.yaml").write_text(text)
    (bad / "binary" / ".hydra").mkdir(parents=True)
    (bad / "binary" / ".hydra" / "config.yaml").write_bytes(bytes(range(128, 256)))
    for name, text in [("cut", '{"status": "compl'), ("empty", "{}"), ("list", "[1]")]:
        (bad / name / "0").mkdir(parents=True)
        shutil.copy(run / "metrics.jsonl", bad / name / "0")
        (bad / name / "0" / "summary.json").write_text(text)
    (bad / "nothing").mkdir()
    (bad / "empty.json").write_text("")
    (bad / "blank.json").write_text('{"text": ""}\n{"text": "  "}\n')
    (bad / "file").write_text("a file, not a directory\n")
    (bad / "no_output.jsonl").write_text('{"instruction": "add", "input": "1 2"}\n')
    shutil.copytree(run / "model", bad / "added_tokens")  # a tokenizer the model does not fit
    tokenizer = AutoTokenizer.from_pretrained(bad / "added_tokens")
    tokenizer.add_tokens([f"<extra_{i}>" for i in range(100)])
    tokenizer.save_pretrained(bad / "added_tokens")
    save_llama(bad / "glue_model")
    for folder, name, text in [
            ("glue_ok", "train.tsv", "sentence\tlabel\na\t0\nb\t1\nc\t0\nd\t1\n"),
            ("glue_ok", "validation.tsv", "sentence\tlabel\na\t0\n"),
            ("glue_sst2", "train.tsv", "sentence\tlabel\na\t0\nb\t7\n"),
            ("glue_sst2", "validation.tsv", "sentence\tlabel\na\t0\n"),
            ("glue_mrpc", "train.csv", "sentence1,label\na,0\n"),
            ("glue_mrpc", "validation.csv", "sentence1,label\na,0\n"),
            ("glue_empty_cell", "train.csv", "sentence,label\na,0\n,1\n"),
            ("glue_empty_cell", "validation.csv", "sentence,label\na,0\n")]:
        (bad / folder).mkdir(exist_ok=True)
        (bad / folder / name).write_text(text)
    (bad / "stsb_text_label.jsonl").write_text(
        '{"sentence1": "a", "sentence2": "b", "label": "high"}\n')
    issue21_files(bad, run)
    return {"run": run, "tmp": bad, "file": bad / "file"}


def issue21_files(bad: Path, run: Path) -> None:
    """Bad files of issue 21: GLUE, instruction and pre-training data, pretrained models,
    and sweeps the report cannot read."""
    from transformers import T5Config

    ok_tsv = "sentence\tlabel\na\t0\nb\t1\nc\t0\n"
    pair = '{"sentence1": "a", "sentence2": "b", "label": %s}\n'
    for folder, name, text in [
            ("glue_split_column", "train.tsv", ok_tsv),
            ("glue_split_column", "validation.tsv", "text\tlabel\na\t0\n"),
            ("glue_empty_file", "train.tsv", ""),
            ("glue_header_only", "train.tsv", "sentence\tlabel\n"),
            ("glue_float_label", "train.tsv", "sentence\tlabel\na\t0\nb\t1.5\n"),
            ("glue_empty_label", "train.tsv", "sentence\tlabel\na\t0\nb\t1\nc\t\n"),
            ("glue_fields", "train.csv", "sentence,label\na,0\nb,1,2\n"),
            ("glue_null", "train.jsonl", '{"sentence": "a", "label": 0}\n'
                                         '{"sentence": null, "label": 1}\n'),
            ("glue_int", "train.jsonl", '{"sentence": 5, "label": 0}\n'),
            ("glue_list", "train.jsonl", '{"sentence": "a", "label": 0}\n' * 2
                                         + '{"sentence": ["a"], "label": 1}\n'),
            ("glue_not_object", "train.jsonl", '{"sentence": "a", "label": 0}\n[1, 2]\n'),
            ("glue_cut", "train.jsonl", '{"sentence": "a", "label": 0}\n{"sentence": "b", "la'),
            ("stsb_high", "train.jsonl", pair % 1 + pair % 7),
            ("stsb_high", "validation.jsonl", pair % 1),
            ("stsb_low", "train.jsonl", pair % 1 + pair % 2.5),
            ("stsb_low", "validation.jsonl", pair % -2.5)]:
        (bad / folder).mkdir(exist_ok=True)
        (bad / folder / name).write_text(text)
        if folder.startswith("glue_") and not (bad / folder / "validation.tsv").exists():
            (bad / folder / "validation.tsv").write_text("sentence\tlabel\na\t0\n")
    (bad / "glue_binary").mkdir()
    (bad / "glue_binary" / "train.tsv").write_bytes(bytes(range(256)))
    (bad / "glue_binary" / "validation.tsv").write_text("sentence\tlabel\na\t0\n")
    record = '{"instruction": "add", "input": "1 2", "output": "3"}\n'
    for name, text in [
            ("no_instruction_column.jsonl", '{"input": "1 2", "output": "3"}\n'),
            ("no_instruction.jsonl", record + '{"input": "1 2", "output": "3"}\n'),
            ("null_instruction.jsonl", '{"instruction": null, "output": "3"}\n'),
            ("int_output.jsonl", record * 2 + '{"instruction": "add", "output": 5}\n'),
            ("list_input.jsonl", record + '{"instruction": "a", "input": ["a"], "output": "b"}\n'),
            ("empty_outputs.jsonl", '{"instruction": "add", "output": ""}\n' * 3),
            ("null_text.jsonl", '{"text": "abc"}\n{"text": null}\n'),
            ("header_only.csv", "text\n")]:
        (bad / name).write_text(text)
    (bad / "binary.jsonl").write_bytes(b"\x00\x01\x02\xff" * 50)
    for name, text in [("corrupt_config", '{"model_type": "llama", '),
                       ("unknown_type", '{"model_type": "zzz"}')]:
        (bad / name).mkdir()
        (bad / name / "config.json").write_text(text)
    T5Config(vocab_size=512, d_model=32, d_ff=64, num_layers=1, num_heads=2).save_pretrained(
        bad / "seq2seq")
    shutil.copytree(run / "model", bad / "garbage_weights")
    (bad / "garbage_weights" / "model.safetensors").write_bytes(b"\x00garbage" * 100)
    for name, summary, metrics in [
            ("status5", {"status": 5}, None),
            ("strings", {}, '{"step": 1, "loss": "abc"}\n')]:
        shutil.copytree(run, bad / name / "0", ignore=shutil.ignore_patterns("model"))
        written = json.loads((bad / name / "0" / "summary.json").read_text())
        (bad / name / "0" / "summary.json").write_text(json.dumps({**written, **summary}))
        if metrics:
            (bad / name / "0" / "metrics.jsonl").write_text(metrics)


def tiny_overrides(cache_dir: str) -> list[str]:
    from conftest import TINY

    return [*TINY, f"task.cache_dir={cache_dir}"]


def files_under(*roots: Path) -> set[Path]:
    return {p for root in roots for p in root.rglob("*") if p.is_file()}


# Their subprocesses import `datasets` and the Hugging Face hub client: ~8 s each.
SLOW_ROWS = [["task=pretrain_hub_wikitext103"], ["model.pretrained=nobody/no-such-model"]]


@pytest.mark.parametrize("row", [pytest.param(r, marks=pytest.mark.slow) if r[1] in SLOW_ROWS
                                 else r for r in ROWS],
                         ids=[f"{r[0]} {' '.join(r[1])}" for r in ROWS])
def test_bad_input_is_one_line_before_anything_is_written(row, prepared, cache_dir, tmp_path,
                                                          monkeypatch):
    module, args, expected, *how = row
    if how == [TWO_GPUS]:
        monkeypatch.setattr("ablate.sweep.gpu_count", lambda device: 2)
    args = [a.format(**prepared) for a in args]
    if module == "ablate":  # the tiny settings keep a row that wrongly trains short
        flags = [a for a in args if a == "-m"]
        tiny = [a for a in tiny_overrides(cache_dir)  # GLUE's vocabulary is its tokenizer's
                if "task=glue" not in args or not a.startswith("task.vocab_size=")]
        args = [*flags, *tiny, *[a for a in args if a != "-m"]]
    (tmp_path / "hf").mkdir()  # an empty Hugging Face cache: the hub task cannot load
    monkeypatch.setattr("datasets.config.HF_DATASETS_CACHE", tmp_path / "hf" / "datasets")
    before = files_under(tmp_path, prepared["run"].parents[2])
    if how == [SUBPROCESS]:
        result = ablate(tmp_path, *args, module=module, check=False,
                        env={**HUB_OFFLINE, "HF_HOME": str(tmp_path / "hf")})
        code, err = result.returncode, result.stderr
    else:
        code, _, err = run_in_process(tmp_path, *args, module=module)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 1, err
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert lines[0].startswith(("ablate: error: ", f"{module}: error: ", "usage: "))
    assert expected in lines[0]
    assert files_under(tmp_path, prepared["run"].parents[2]) == before
