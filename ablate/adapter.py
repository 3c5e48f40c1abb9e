"""The model's adapter (`adapter=none|lora|relora|low_rank`): LoRA through peft, ReLoRA's
merge-and-restart, and GaLore Table 2's low-rank weights, all one mechanism.

- lora: peft's LoRA on the target modules; their weights (and every other weight) frozen,
  the adapter's A and B trained, plus the weights named in `adapter.full_rank` (pre-training
  from scratch trains the embeddings, norms and head in full, as GaLore's LoRA baseline).
- relora: lora, and every `adapter.restart_every` steps the adapter is merged into the
  weights, A and B re-initialised (A random, B zero, as at the start) and their optimizer
  state dropped (a full reset of the adapter's state; the full-rank weights keep theirs;
  ReLoRA's paper prunes 99% of it by magnitude and re-warms the lr with a jagged schedule:
  neither is done here, the lr follows the run's schedule).
- low_rank: each target weight W is replaced by the product of two trained factors (W zeroed
  and frozen, A and B both initialised at random): W = (alpha / rank) B A, from scratch. The
  zero W is still stored (peft's mechanism), so its memory is LoRA's, not a factored model's.
"""

from __future__ import annotations

import warnings

import torch
from omegaconf import DictConfig

from .errors import ConfigError


KINDS = ("none", "lora", "relora", "low_rank")


def targets(model: torch.nn.Module, adapter: DictConfig) -> dict[str, torch.nn.Module]:
    """The modules peft adapts: those whose name is a target or ends with "." + a target."""
    return {name: m for name, m in model.named_modules()
            if any(name == t or name.endswith("." + t) for t in adapter.target_modules)
            and getattr(m, "weight", None) is not None and m.weight.dim() == 2}


def check_adapter(model: torch.nn.Module, adapter: DictConfig, model_name: str) -> None:
    """One-line errors before any compute: targets the model lacks, a rank above a target's
    dimensions, a restart period that is not positive."""
    if adapter.name not in KINDS:
        raise ConfigError(f"adapter.name={adapter.name}: allowed are {', '.join(KINDS)}")
    if adapter.name == "none":
        return
    found = targets(model, adapter)
    if not found:
        names = dict.fromkeys(n.split(".")[-1] for n, m in model.named_modules()
                              if isinstance(getattr(m, "weight", None), torch.Tensor)
                              and m.weight.dim() == 2)
        raise ConfigError(f"adapter.target_modules={list(adapter.target_modules)}: matches no "
                          f"module of model {model_name} (its 2-D weights: {', '.join(names)})")
    for name, m in found.items():
        if adapter.rank > min(m.weight.shape):
            raise ConfigError(f"adapter.rank={adapter.rank}: larger than {name}'s dimensions "
                              f"{list(m.weight.shape)} (allowed: 1 to {min(m.weight.shape)})")
    if adapter.rank < 1:
        raise ConfigError(f"adapter.rank={adapter.rank}: must be >= 1")
    if not 0.0 <= adapter.dropout < 1.0:
        raise ConfigError(f"adapter.dropout={adapter.dropout}: must be in [0, 1)")
    if adapter.name == "relora" and adapter.restart_every < 1:
        raise ConfigError(f"adapter.restart_every={adapter.restart_every}: must be >= 1 for "
                          "adapter=relora (ReLoRA's T: steps between merges)")


def apply_adapter(model: torch.nn.Module, adapter: DictConfig, model_name: str = ""):
    """The model with its adapter (peft's PeftModel), or the model itself for `none`."""
    check_adapter(model, adapter, model_name)
    if adapter.name == "none":
        return model
    from peft import LoraConfig, get_peft_model

    low_rank = adapter.name == "low_rank"
    config = LoraConfig(r=adapter.rank, lora_alpha=adapter.alpha, lora_dropout=adapter.dropout,
                        target_modules=list(adapter.target_modules),
                        fan_in_fan_out=model.config.model_type == "gpt2",
                        init_lora_weights=not low_rank)
    with warnings.catch_warnings():  # peft 0.21 asks transformers 5 a deprecated question
        warnings.filterwarnings("ignore", "`is_gradient_checkpointing` is deprecated",
                                FutureWarning)
        peft_model = get_peft_model(model, config, autocast_adapter_dtype=False)
    for name, p in peft_model.named_parameters():
        if any(key in name for key in adapter.full_rank):
            p.requires_grad_(True)
    if low_rank:
        with torch.no_grad():
            for layer in lora_layers(peft_model):
                layer.get_base_layer().weight.zero_()
    return peft_model


def lora_layers(model: torch.nn.Module) -> list:
    from peft.tuners.lora import LoraLayer

    return [m for m in model.modules() if isinstance(m, LoraLayer)]


@torch.no_grad()
def restart(model: torch.nn.Module, optimizer) -> None:
    """ReLoRA's restart: each adapter merged into its weight, A and B re-initialised as at
    the start, and their optimizer state dropped (fused: each parameter's own optimizer)."""
    adapter_params = set()
    for layer in lora_layers(model):
        layer.merge(adapter_names=["default"])
        layer.merged_adapters.clear()  # merged for good: the forward uses the new A, B
        layer.reset_lora_parameters("default", True)
        adapter_params.update(layer.lora_A["default"].parameters())
        adapter_params.update(layer.lora_B["default"].parameters())
    inner = getattr(optimizer, "optimizers", None)
    for opt in inner.values() if inner is not None else [optimizer]:
        for p in [p for p in opt.state if p in adapter_params]:
            del opt.state[p]


def save_adapter(model: torch.nn.Module, adapter: DictConfig, folder) -> None:
    """peft's format (adapter_config.json, adapter_model.safetensors) in `folder`; with
    `adapter.save_merged`, also the merged model in transformers' format in folder/merged."""
    model.save_pretrained(folder)
    if adapter.save_merged:
        model.merge_and_unload().save_pretrained(folder / "merged")

