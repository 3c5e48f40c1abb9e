"""LLaMA and GPT-2 from `transformers` configs, randomly initialised (no hub), with the head
a task asks for."""

from __future__ import annotations

import torch
from omegaconf import DictConfig
from transformers import (GPT2Config, GPT2ForSequenceClassification, GPT2LMHeadModel, LlamaConfig,
                          LlamaForCausalLM, LlamaForSequenceClassification)


def hf_config(model: DictConfig):
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


def build_model(model: DictConfig, device: str | torch.device = "cpu",
                head: str | int = "causal_lm") -> torch.nn.Module:
    """Random init on `device`; on "meta" no memory is allocated (for size estimates).
    `head`: "causal_lm", or n: a sequence-classification head with n outputs (1: regression)."""
    config = hf_config(model)
    if head == "causal_lm":
        cls = LlamaForCausalLM if model.arch == "llama" else GPT2LMHeadModel
    else:
        config.num_labels = head
        cls = LlamaForSequenceClassification if model.arch == "llama" else (
            GPT2ForSequenceClassification)
    with torch.device(device):
        return cls(config)


def count_params(module: torch.nn.Module) -> int:
    """Distinct parameters (tied embeddings counted once)."""
    return sum(p.numel() for p in module.parameters())
