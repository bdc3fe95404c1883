"""Several trials per GPU, sized by the memory each will need rather than a fixed fraction.

With `resources.gpus_per_trial: auto` each trial asks Ray for the share of a GPU that its
predicted peak memory takes: 4-bit weights (and bf16 embeddings), LoRA weights with their
gradients and AdamW state, one micro-batch's activations and a fixed headroom. Ray never
places more shares on a GPU than add up to one, so under these predictions trials that share a
GPU cannot oversubscribe its memory. The predictions are pure arithmetic on the model's
config.json: the driver stays free of torch and CUDA.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable

from search.config import ConfigError, ModelConfig, SweepConfig, TrainingConfig, TrialHyperparameters

GIB = 2**30
HEADROOM_BYTES = 2 * GIB  # CUDA context, allocator fragmentation, generation's working set
NF4_BYTES_PER_WEIGHT = 0.5 + 4 / 64  # 4 bits, plus one float32 scale per 64-weight block
LORA_BYTES_PER_WEIGHT = 16  # float32 weight, gradient and AdamW's two moments
SHARE_STEP = 0.01  # GPU shares are whole hundredths: what Ray reserves is never below the prediction


def model_shape(model: ModelConfig) -> dict[str, Any]:
    """The fields of the model's config.json the predictions need."""
    path = Path(model.name_or_path)
    if path.is_dir():
        config_file = path / "config.json"
        if not config_file.is_file():
            raise ConfigError(f"model.name_or_path {path}: no config.json to size trials by (gpus_per_trial: auto)")
        values = json.loads(config_file.read_text(encoding="utf-8"))
    else:
        from transformers import AutoConfig  # a hub id: the config from the local cache (or the hub)

        values = AutoConfig.from_pretrained(model.name_or_path, trust_remote_code=model.trust_remote_code).to_dict()
    values = values.get("text_config", values)
    needed = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size")
    missing = [key for key in needed if key not in values]
    if missing:
        raise ConfigError(f"model {model.name_or_path}: config.json lacks {', '.join(missing)}; "
                          "set resources.gpus_per_trial to a number")
    return values


def activation_bytes_per_token(shape: dict[str, Any], gradient_checkpointing: bool) -> float:
    """Activations a decoder keeps for the backward pass, per token, in bf16.

    Without recompute each layer keeps about 16 hidden-size values per token (norm inputs and
    outputs, partly float32; q/k/v; attention output; residuals; LoRA inputs) and 5 MLP-size ones
    (gate, up, activation, product, LoRA input of down_proj). With recompute only each layer's
    input stays, plus one layer rebuilt at a time. Not yet calibrated against a GPU measurement.
    """
    hidden, layers = shape["hidden_size"], shape["num_hidden_layers"]
    one_layer = 2 * (16 * hidden + 5 * shape["intermediate_size"])
    if gradient_checkpointing:
        return layers * 2 * hidden + one_layer
    return layers * one_layer


def _linear_shapes(shape: dict[str, Any]) -> dict[str, tuple[int, int]]:
    """(in, out) of each projection in one decoder layer, by module name."""
    hidden, inner = shape["hidden_size"], shape["intermediate_size"]
    heads = shape["num_attention_heads"]
    head_dim = shape.get("head_dim") or hidden // heads
    kv = (shape.get("num_key_value_heads") or heads) * head_dim
    return {
        "q_proj": (hidden, heads * head_dim), "k_proj": (hidden, kv), "v_proj": (hidden, kv),
        "o_proj": (heads * head_dim, hidden),
        "gate_proj": (hidden, inner), "up_proj": (hidden, inner), "down_proj": (inner, hidden),
    }


def weight_bytes(shape: dict[str, Any], dense_bytes: int = 2) -> float:
    """The base model in memory: NF4 projections; embeddings, LM head and norms in the compute dtype
    (bf16 on GPU: dense_bytes=2)."""
    layers = shape["num_hidden_layers"]
    quantized = layers * sum(i * o for i, o in _linear_shapes(shape).values()) * NF4_BYTES_PER_WEIGHT
    embeddings = shape["vocab_size"] * shape["hidden_size"] * dense_bytes  # bitsandbytes leaves them unquantized
    head = 0 if shape.get("tie_word_embeddings") else embeddings
    norms = (2 * layers + 1) * shape["hidden_size"] * dense_bytes
    return quantized + embeddings + head + norms


def lora_bytes(shape: dict[str, Any], hp: TrialHyperparameters) -> float:
    modules = _linear_shapes(shape)
    targets = modules if hp.target_modules == "all-linear" else set(hp.target_modules)
    chosen = {name: dims for name, dims in modules.items() if name in targets}
    per_layer = sum(hp.lora_r * (i + o) for i, o in chosen.values())
    return shape["num_hidden_layers"] * per_layer * LORA_BYTES_PER_WEIGHT


def predicted_peak_bytes(shape: dict[str, Any], hp: TrialHyperparameters, training: TrainingConfig,
                         gradient_checkpointing: bool) -> float:
    tokens = training.micro_batch_size * hp.max_length
    return (weight_bytes(shape) + lora_bytes(shape, hp) + HEADROOM_BYTES
            + tokens * activation_bytes_per_token(shape, gradient_checkpointing))


def plan_trial(shape: dict[str, Any], hp: TrialHyperparameters, training: TrainingConfig,
               gpu_memory_bytes: float) -> tuple[float, bool]:
    """(GPU share, gradient checkpointing) for one trial: recompute only if the trial would not
    otherwise fit a whole GPU, then the smallest share in hundredths that holds its peak."""
    checkpointing = training.gradient_checkpointing
    if checkpointing == "auto":
        checkpointing = predicted_peak_bytes(shape, hp, training, False) > gpu_memory_bytes
    peak = predicted_peak_bytes(shape, hp, training, checkpointing)
    if peak > gpu_memory_bytes:
        raise ConfigError(
            f"a trial with max_length={hp.max_length}, micro_batch_size={training.micro_batch_size}, "
            f"lora_r={hp.lora_r} needs about {peak / GIB:.1f} GiB, more than one GPU's "
            f"{gpu_memory_bytes / GIB:.1f} GiB; lower them, or give whole GPUs (resources.gpus_per_trial: 1 or more)"
        )
    share = math.ceil(peak / gpu_memory_bytes / SHARE_STEP) * SHARE_STEP
    return min(1.0, round(share, 2)), checkpointing


def planned_peak(sweep: SweepConfig, hp: TrialHyperparameters) -> Callable[[float], float]:
    """For a trial: given one GPU's memory, the bytes Ray reserves for it under gpus_per_trial auto."""
    shape = model_shape(sweep.model)

    def on(gpu_memory_bytes: float) -> float:
        share, _ = plan_trial(shape, hp, sweep.training, gpu_memory_bytes)
        return share * gpu_memory_bytes

    return on


def trial_resources(sweep: SweepConfig, gpu_memory_bytes: float | None):
    """What Tune asks Ray for, per trial: fixed, or (auto) from the trial's own hyperparameters."""
    cpus = sweep.resources.cpus_per_trial
    if sweep.resources.gpus_per_trial != "auto":
        return {"cpu": cpus, "gpu": sweep.resources.gpus_per_trial}
    if not gpu_memory_bytes:
        return {"cpu": cpus, "gpu": 0}  # no GPU in the cluster: CPU trials
    shape = model_shape(sweep.model)

    def for_trial(config: dict[str, Any]) -> dict[str, float]:
        hp = TrialHyperparameters.resolve(sweep.search, config)
        share, _ = plan_trial(shape, hp, sweep.training, gpu_memory_bytes)
        return {"cpu": cpus, "gpu": share}

    return for_trial


def check_every_trial_fits(sweep: SweepConfig, gpu_memory_bytes: float) -> None:
    """Refuse before any trial starts if the largest corner of the search space cannot fit one GPU."""
    shape = model_shape(sweep.model)
    corner: dict[str, Any] = {}
    for name, param in sweep.search.searched.items():
        if name == "target_modules":
            corner[name] = "all-linear"  # the most LoRA weights
        else:
            corner[name] = max(param.choice) if hasattr(param, "choice") else param.high
    plan_trial(shape, TrialHyperparameters.resolve(sweep.search, corner), sweep.training, gpu_memory_bytes)


GPU_QUERY_TIMEOUT_S = 180


def smallest_gpu_memory_bytes() -> int | None:
    """Memory of the smallest GPU in the running Ray cluster, read on every GPU node; None without GPUs.

    Shares are fractions of "a GPU" to Ray, whatever its size: sizing them by the smallest GPU
    keeps every placement within memory in a mixed cluster.
    """
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = [node for node in ray.nodes() if node["Alive"] and node["Resources"].get("GPU", 0) > 0]
    if not nodes:
        return None

    @ray.remote(num_cpus=0, num_gpus=SHARE_STEP, max_retries=0)
    def gpu_memory() -> int | None:
        import torch

        return torch.cuda.get_device_properties(0).total_memory if torch.cuda.is_available() else None

    found = {}
    for node in nodes:
        ref = gpu_memory.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)).remote()
        try:
            found[node["NodeID"]] = ray.get(ref, timeout=GPU_QUERY_TIMEOUT_S)
        except Exception as exc:  # a busy or broken node: say which, and what to do
            raise ConfigError(f"gpus_per_trial: auto could not read the GPU memory of node {node['NodeID'][:12]} "
                              f"({type(exc).__name__}); give resources.gpus_per_trial a number") from None
    unreadable = [node_id for node_id, memory in found.items() if not memory]
    if unreadable:
        raise ConfigError(f"gpus_per_trial: auto: node {unreadable[0][:12]} advertises GPUs that torch cannot see; "
                          "give resources.gpus_per_trial a number")
    return min(found.values())
