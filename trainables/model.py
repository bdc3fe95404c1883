"""The recipe's model: a causal LM loaded in 4-bit, prepared for k-bit training, LoRA on top."""

from __future__ import annotations

from typing import Any

from search.config import ModelConfig, TrialHyperparameters


def compute_dtype(model: ModelConfig):
    import torch

    if model.compute_dtype == "auto":
        # bf16 matmuls run ~15x slower than fp32 on CPUs without AMX; GPUs want bf16.
        return torch.bfloat16 if torch.cuda.is_available() else torch.float32
    return getattr(torch, model.compute_dtype)


def load_tokenizer(model: ModelConfig) -> Any:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model.name_or_path, trust_remote_code=model.trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_quantized_model(model: ModelConfig) -> Any:
    import torch
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    dtype = compute_dtype(model)
    quantization = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=model.quant_type,
        bnb_4bit_compute_dtype=dtype,
        bnb_4bit_use_double_quant=model.double_quant,
    )
    # Ray sets CUDA_VISIBLE_DEVICES to this trial's GPUs; "auto" spreads over all of them.
    device_map = "auto" if torch.cuda.is_available() else "cpu"
    base = AutoModelForCausalLM.from_pretrained(
        model.name_or_path,
        quantization_config=quantization,
        dtype=dtype,
        device_map=device_map,
        trust_remote_code=model.trust_remote_code,
    )
    # Generation turns the KV cache on explicitly; in training a cache would also hide packed
    # examples' boundaries from the attention mask (transformers builds it only without a cache).
    base.config.use_cache = False
    return base


def prepare_for_training(base: Any, gradient_checkpointing: bool) -> Any:
    from peft import prepare_model_for_kbit_training

    return prepare_model_for_kbit_training(base, use_gradient_checkpointing=gradient_checkpointing)


def attach_lora(base: Any, hp: TrialHyperparameters) -> Any:
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(
        r=hp.lora_r,
        lora_alpha=hp.lora_alpha,
        lora_dropout=hp.lora_dropout,
        target_modules=hp.target_modules,
        bias="none",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(base, lora)
