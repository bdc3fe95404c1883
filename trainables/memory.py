"""What one trial may spend of its GPU's memory, and the choices that depend on it: whether to
recompute activations (gradient checkpointing) and how many dialogues to generate at once.

The estimates are per token, from the model's shape; they lean high on purpose, and a trial that
still runs out of memory is retried by trainables.train at half the micro-batch.
"""

from __future__ import annotations

from typing import Any, Callable

from search.config import EvaluationConfig, ResourcesConfig, TrainingConfig
from search.packing import GIB, HEADROOM_BYTES, activation_bytes_per_token
MAX_GENERATION_BATCH = 128
CPU_GENERATION_BATCH = 16
MIN_MERGED_BATCH = 32


def memory_budget_bytes(resources: ResourcesConfig, plan: Callable[[float], float] | None = None) -> int | None:
    """The trial's share of GPU memory; None on CPU.

    `plan` maps one GPU's memory to the trial's predicted peak: with gpus_per_trial auto, Ray
    reserved that share of a GPU for the trial (search.packing), so that is its budget.
    """
    import torch

    if not torch.cuda.is_available():
        return None
    if resources.gpu_memory_gb is not None:
        return int(resources.gpu_memory_gb * GIB)
    total = torch.cuda.get_device_properties(0).total_memory
    if resources.gpus_per_trial == "auto" and plan is not None:
        return int(plan(total))
    share = resources.gpus_per_trial if resources.gpus_per_trial != "auto" else 1.0
    return int(total * (min(share, 1.0) or 1.0))


def use_gradient_checkpointing(training: TrainingConfig, model: Any, max_length: int, budget: int | None) -> bool:
    """The configured choice, or for auto: recompute only when one micro-batch would not fit."""
    if training.gradient_checkpointing != "auto":
        return training.gradient_checkpointing
    if budget is None:
        return False  # CPU: host memory is not the limit, compute is
    tokens = training.micro_batch_size * max_length
    activations = tokens * activation_bytes_per_token(model.config.to_dict(), False)
    needed = model.get_memory_footprint() + activations + HEADROOM_BYTES
    return needed > budget


def kv_cache_bytes_per_token(config: Any, value_bytes: int = 2) -> int:
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    return 2 * config.num_hidden_layers * kv_heads * head_dim * value_bytes  # keys and values


def cache_value_bytes(model: Any, merged_copy: bool) -> int:
    """Bytes per cached key or value. A 4-bit model prepared for training keeps its norms in
    float32, so its hidden states, and the keys and values made from them, are float32 even under
    autocast (measured on an H100: the bf16 estimate let an 8B evaluation peak 22% over its
    share); a merged copy computes, and caches, in its compute dtype."""
    from trainables.model import loaded_compute_dtype

    try:
        dtype = loaded_compute_dtype(model) if merged_copy else model.dtype
    except AttributeError:  # a shape without weights (planning ahead of loading)
        return 2
    return dtype.itemsize


def use_merged_copy(evaluation: EvaluationConfig, model: Any, longest_prompt: int, budget: int | None) -> bool:
    """The configured choice, or for auto: a dense merged copy when it fits the trial's share with room
    left for MIN_MERGED_BATCH sequences (a copy that forces tiny batches loses what it gains); never on CPU."""
    if evaluation.merged_copy != "auto":
        return evaluation.merged_copy
    if budget is None:
        return False
    free = budget - _allocated_bytes() - HEADROOM_BYTES - dense_copy_bytes(model)
    return free / 2 >= MIN_MERGED_BATCH * _bytes_per_sequence(evaluation, model, longest_prompt, merged_copy=True)


def generation_batch_size(evaluation: EvaluationConfig, model: Any, longest_prompt: int, budget: int | None) -> int:
    """The configured batch, or for auto: as many sequences as the KV cache fits into half the free share
    (beside the merged copy, when one is used)."""
    if evaluation.batch_size != "auto":
        return evaluation.batch_size
    if budget is None:
        return CPU_GENERATION_BATCH
    merged_copy = use_merged_copy(evaluation, model, longest_prompt, budget)
    free = budget - _allocated_bytes() - HEADROOM_BYTES
    if merged_copy:
        free -= dense_copy_bytes(model)
    per_sequence = _bytes_per_sequence(evaluation, model, longest_prompt, merged_copy)
    return max(1, min(MAX_GENERATION_BATCH, int(free / 2 / per_sequence)))


def _bytes_per_sequence(evaluation: EvaluationConfig, model: Any, longest_prompt: int, merged_copy: bool) -> int:
    """One generated sequence's KV cache plus the float32 logits of one step over the vocabulary."""
    tokens = longest_prompt + evaluation.max_new_tokens
    value_bytes = cache_value_bytes(model, merged_copy)
    return tokens * kv_cache_bytes_per_token(model.config, value_bytes) + 4 * model.config.vocab_size


def dense_copy_bytes(model: Any) -> int:
    """Memory of the model as a dense copy in its compute dtype (trainables.model.merged_dense_copy)."""
    import bitsandbytes as bnb
    import torch

    from trainables.model import loaded_compute_dtype

    dtype = loaded_compute_dtype(model)
    quantized = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    packed = {id(m.weight) for m in quantized}
    parameters = sum(m.in_features * m.out_features for m in quantized)
    parameters += sum(p.numel() for name, p in model.named_parameters() if id(p) not in packed and "lora_" not in name)
    return parameters * torch.empty((), dtype=dtype).element_size()


def _allocated_bytes() -> int:
    import torch

    return torch.cuda.memory_allocated() if torch.cuda.is_available() else 0
