"""The model of a job: LLaMA or GPT-2 built from the model group's shape with random init (no
hub), or, with `model.pretrained`, any checkpoint transformers' Auto classes load (a hub name
or a local directory; the group's shape keys are then read from its config.json); in both
cases with the head the task asks for.

transformers' model classes are imported where a model is made: the command line's
config errors and `--help` need none (importing them takes ~3 s)."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from huggingface_hub import is_offline_mode
from omegaconf import DictConfig, OmegaConf

from .errors import ConfigError, first_line


def checkpoint_config(name: str, **kwargs):
    """A pretrained checkpoint's config (its config.json); FileNotFoundError with one line
    saying why when there is none."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(name, **kwargs)
    except (OSError, ValueError) as exc:
        if os.path.isfile(os.path.join(name, "config.json")):
            why = f"its config.json is not one transformers reads ({first_line(exc)})"
        elif os.path.isdir(name):
            why = "a directory without a transformers config.json"
        elif os.path.isabs(name) or name.startswith(".") or name.count("/") > 1:
            why = "no such directory (nor a hub name: those are NAME or OWNER/NAME)"
        elif is_offline_mode():
            why = ("not a local directory, and not in the local Hugging Face cache (offline: "
                   "HF_HUB_OFFLINE=1)")
        else:
            why = f"not a local directory, and not on the hub: {str(exc).splitlines()[0]}"
        raise FileNotFoundError(f"model.pretrained={name}: {why}") from None


def hf_config(model: DictConfig):
    from transformers import GPT2Config, LlamaConfig

    if model.pretrained:
        return checkpoint_config(model.pretrained)
    if model.arch == "llama":
        return LlamaConfig(
            vocab_size=model.vocab_size,
            hidden_size=model.hidden_size,
            intermediate_size=model.intermediate_size,
            num_hidden_layers=model.num_layers,
            num_attention_heads=model.num_heads,
            max_position_embeddings=model.max_seq_len,
            rms_norm_eps=1e-6,
            tie_word_embeddings=False,
            use_cache=False,
        )
    return GPT2Config(
        vocab_size=model.vocab_size,
        n_embd=model.hidden_size,
        n_inner=model.intermediate_size,
        n_layer=model.num_layers,
        n_head=model.num_heads,
        n_positions=model.max_seq_len,
        tie_word_embeddings=True,
        resid_pdrop=0.0,  # no dropout: pre-training runs stay deterministic per seed
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        use_cache=False,
    )


def shape(model: DictConfig) -> DictConfig:
    """The model group's shape keys; with `model.pretrained`, read from the checkpoint's
    config (`arch` is then its model_type: llama, gpt2, roberta...)."""
    if not model.pretrained:
        return model
    c = checkpoint_config(model.pretrained)
    return OmegaConf.create({
        "name": model.name, "pretrained": model.pretrained, "arch": c.model_type,
        "vocab_size": c.vocab_size, "hidden_size": c.hidden_size,
        "intermediate_size": (getattr(c, "intermediate_size", None) or getattr(c, "n_inner", None)
                              or 4 * c.hidden_size),
        "num_layers": c.num_hidden_layers, "num_heads": c.num_attention_heads,
        "max_seq_len": getattr(c, "max_position_embeddings", None)})


def build_model(model: DictConfig, device: str | torch.device = "cpu",
                head: str | int = "causal_lm",
                dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    """Random init, or the pretrained weights, on `device`; on "meta" no memory is allocated
    and of a checkpoint only its config is read (for size estimates). `head`: "causal_lm",
    or n: a sequence-classification head with n outputs (1: regression); on a checkpoint
    without one, transformers initialises it at random. In another `dtype` the weights are
    the fp32 ones rounded, so a bf16 job starts where the fp32 job of its seed does."""
    from transformers import (GPT2ForSequenceClassification, GPT2LMHeadModel, LlamaForCausalLM,
                              LlamaForSequenceClassification)

    if model.pretrained:
        return pretrained_model(model.pretrained, device, head).to(dtype)
    config = hf_config(model)
    if head == "causal_lm":
        cls = LlamaForCausalLM if model.arch == "llama" else GPT2LMHeadModel
    else:
        config.num_labels = head
        cls = LlamaForSequenceClassification if model.arch == "llama" else (
            GPT2ForSequenceClassification)
    with torch.device(device):
        return cls(config).to(dtype)


def pretrained_model(name: str, device: str | torch.device, head: str | int) -> torch.nn.Module:
    """The checkpoint with the head asked for; ConfigError (one line) for a kind of model
    transformers has no such class for (a seq2seq model), or weights it cannot read."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    cls = AutoModelForCausalLM if head == "causal_lm" else AutoModelForSequenceClassification
    labels = {} if head == "causal_lm" else {"num_labels": head}
    config = checkpoint_config(name, **labels)
    kind = "causal-LM" if head == "causal_lm" else "sequence-classification"
    try:
        if str(device) == "meta":
            with torch.device("meta"):
                return cls.from_config(config, dtype=torch.float32)
        return cls.from_pretrained(name, dtype=torch.float32, **labels).to(device)
    except Exception as exc:  # noqa: BLE001 - safetensors, torch.load: many kinds of bad file
        if type(config) not in cls._model_mapping:
            raise ConfigError(f"model.pretrained={name}: transformers has no {kind} model for "
                              f"its model_type {config.model_type} (allowed: a decoder such as "
                              "llama or gpt2; a seq2seq model is not trained here)") from None
        raise weights_error(name, exc) from None


def weights_error(name: str, exc: Exception) -> ConfigError:
    return ConfigError(f"model.pretrained={name}: cannot load its weights "
                       f"({type(exc).__name__}: {first_line(exc)})")


def check_weights(name: str) -> None:
    """A local checkpoint's safetensors files have headers safetensors reads (no tensor is
    loaded): garbage weights are refused before any data is read."""
    from safetensors import safe_open

    for path in sorted(Path(name).glob("*.safetensors")) if os.path.isdir(name) else []:
        try:
            with safe_open(str(path), "pt"):
                pass
        except Exception as exc:  # noqa: BLE001 - SafetensorError, OSError
            raise weights_error(name, exc) from None


def count_params(module: torch.nn.Module) -> int:
    """Distinct parameters (tied embeddings counted once)."""
    return sum(p.numel() for p in module.parameters())
