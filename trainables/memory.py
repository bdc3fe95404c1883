"""The one memory planner: what a trial will need, and what follows from it.

From the model's shape (its config.json, pure arithmetic, no torch) it predicts a trial's peak GPU
memory: 4-bit weights, LoRA weights with their gradients and AdamW state, one micro-batch's
activations and a fixed headroom. From that it decides, once per trial, the `MemoryPlan`: the
share of a GPU the trial asks Ray for (`gpus_per_trial: auto`), whether it recomputes activations,
its micro-batch, whether ROUGE's generation runs through a merged dense copy, and how many
dialogues it generates at once. The driver plans every trial with it before the trial starts;
the trial applies the plan as given. The estimates lean high on purpose, and a
trial that still runs out of memory is retried by trainables.train at half the micro-batch.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from trainables.config import EvaluationConfig, MemoryPlan, ModelConfig, TrainingConfig, TrialHyperparameters
from trainables.errors import ConfigError

logger = logging.getLogger(__name__)
GIB = 2**30
HEADROOM_BYTES = 2 * GIB  # CUDA context, allocator fragmentation, generation's working set
NF4_BYTES_PER_WEIGHT = 0.5 + 4 / 64  # 4 bits, plus one float32 scale per 64-weight block
LORA_BYTES_PER_WEIGHT = 16  # float32 weight, gradient and AdamW's two moments
SHARE_STEP = 0.01  # GPU shares are whole hundredths: what Ray reserves is never below the prediction
DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4}
FLOAT32_BYTES = 4
MAX_GENERATION_BATCH = 128
CPU_GENERATION_BATCH = 16
MIN_MERGED_BATCH = 32  # a merged copy that leaves room for fewer sequences at once loses what it gains


@dataclass(frozen=True)
class GpuRequest:
    """The GPU side of a trial as the sweep configured it (resources.*)."""

    gpu_memory_bytes: float  # one GPU's memory: the smallest in the cluster, so every placement fits
    gpus_per_trial: float | Literal["auto"]
    budget_bytes: float | None = None  # resources.gpu_memory_gb, when the user set it
    least_share: float | None = None  # with auto: no trial asks for less (every trial alike, for worker reuse)


def model_shape(model: ModelConfig) -> dict[str, Any]:
    """The fields of the model's config.json the predictions need."""
    path = Path(model.name_or_path)
    if path.is_dir():
        config_file = path / "config.json"
        if not config_file.is_file():
            raise ConfigError(f"model.name_or_path {path}: no config.json to size trials by")
        values = json.loads(config_file.read_text(encoding="utf-8"))
    else:
        from transformers import AutoConfig  # heavy; a hub id's config, from the local cache or the hub

        values = AutoConfig.from_pretrained(model.name_or_path, trust_remote_code=model.trust_remote_code).to_dict()
    values = values.get("text_config", values)
    needed = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size")
    missing = [key for key in needed if key not in values]
    if missing:
        raise ConfigError(f"model {model.name_or_path}: config.json lacks {', '.join(missing)}; "
                          "set resources.gpus_per_trial to a number")
    return values


def compute_dtype_name(model: ModelConfig, on_gpu: bool) -> str:
    """The 4-bit layers' compute dtype: `auto` is bfloat16 on a GPU, float32 on a CPU (where bf16
    matmuls run ~15x slower than float32 without AMX)."""
    if model.compute_dtype != "auto":
        return model.compute_dtype
    return "bfloat16" if on_gpu else "float32"


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
    head_dim = _head_dim(shape)
    kv = (shape.get("num_key_value_heads") or heads) * head_dim
    return {
        "q_proj": (hidden, heads * head_dim), "k_proj": (hidden, kv), "v_proj": (hidden, kv),
        "o_proj": (heads * head_dim, hidden),
        "gate_proj": (hidden, inner), "up_proj": (hidden, inner), "down_proj": (inner, hidden),
    }


def _linear_parameters_per_layer(shape: dict[str, Any]) -> int:
    return sum(i * o for i, o in _linear_shapes(shape).values())


def _head_dim(shape: dict[str, Any]) -> int:
    return shape.get("head_dim") or shape["hidden_size"] // shape["num_attention_heads"]


def _dense_parameters(shape: dict[str, Any]) -> tuple[int, int]:
    """(parameters of the quantized projections, parameters left dense: embeddings, LM head, norms)."""
    layers, hidden = shape["num_hidden_layers"], shape["hidden_size"]
    projections = layers * _linear_parameters_per_layer(shape)
    embeddings = shape["vocab_size"] * hidden  # bitsandbytes leaves them unquantized
    head = 0 if shape.get("tie_word_embeddings") else embeddings
    norms = (2 * layers + 1) * hidden
    return projections, embeddings + head + norms


def weight_bytes(shape: dict[str, Any], dense_bytes: int = 2) -> float:
    """The base model in memory: NF4 projections; embeddings, LM head and norms at dense_bytes each
    (2 as loaded in bf16; 4 once k-bit preparation has made them float32, as a trial's are)."""
    projections, dense = _dense_parameters(shape)
    return projections * NF4_BYTES_PER_WEIGHT + dense * dense_bytes


def dense_copy_bytes(shape: dict[str, Any], dtype_bytes: int) -> int:
    """A dense copy of the whole model in the compute dtype (trainables.model.merged_dense_copy)."""
    return sum(_dense_parameters(shape)) * dtype_bytes


def lora_bytes(shape: dict[str, Any], hp: TrialHyperparameters) -> float:
    modules = _linear_shapes(shape)
    targets = modules if hp.target_modules == "all-linear" else set(hp.target_modules)
    chosen = {name: dims for name, dims in modules.items() if name in targets}
    per_layer = sum(hp.lora_r * (i + o) for i, o in chosen.values())
    return shape["num_hidden_layers"] * per_layer * LORA_BYTES_PER_WEIGHT


def kv_cache_bytes_per_token(shape: dict[str, Any], value_bytes: int) -> int:
    kv_heads = shape.get("num_key_value_heads") or shape["num_attention_heads"]
    return 2 * shape["num_hidden_layers"] * kv_heads * _head_dim(shape) * value_bytes  # keys and values


def dense_layer_bytes(training: TrainingConfig, compute_dtype_bytes: int) -> int:
    """Bytes per weight of the layers left unquantized (embeddings, LM head, norms) in a trial:
    float32 after k-bit preparation, unless training.float32_dense_layers is off. plan_memory decides
    its `auto` first; left undecided, it counts as the larger."""
    return compute_dtype_bytes if training.float32_dense_layers is False else FLOAT32_BYTES


def float32_dense_layers(training: TrainingConfig, compute_dtype: str) -> bool:
    """training.float32_dense_layers; auto: off where the compute dtype is bfloat16. On an H200 the
    8B shape trained 1.19x faster with them in bf16 at equal memory, and on SmolLM2 the ROUGE-L of
    bf16 dense layers after 60 steps was within 0.22 points of the plain recipe's for 2 seeds
    (benchmarks/results/2026-12-02-trial-speed). float16's range is narrow for a residual stream,
    and in float32 there is nothing to cast: peft's preparation as it is."""
    return _given(training.float32_dense_layers, compute_dtype != "bfloat16")


# compile_layers' auto. Measured on an H200 (benchmarks/results/2026-12-02-trial-speed): the eager
# trials ran at most 0.26 MFU of 790 TFLOP/s (205 TFLOP/s, the 8B shape on a whole GPU, counted as
# trial_speed's MFU counts: 4 FLOP per parameter and token, the forward and the backward through the
# frozen weights; what LoRA's own weights add is under 1 %); compiled
# layers with FlexAttention trained the 8B shape 2.1x the eager defaults within the plain recipe's
# memory (1.85x on a whole GPU); a compile cost up to 124 s (a process's first FlexAttention, 15-40 s
# after it). So a trial whose eager training would take 240 s repays the worst compile.
FASTEST_EAGER_FLOPS = 205e12
COMPILE_REPAID_AFTER_S = 240.0


def parameter_count(shape: dict[str, Any]) -> int:
    return sum(_dense_parameters(shape))


def eager_training_seconds(shape: dict[str, Any], training: TrainingConfig, hp: TrialHyperparameters,
                           total_steps: int) -> float:
    """The least time eager layers would take to train a whole trial: its steps' tokens (every example
    at max_length, as the memory estimates count them) at 4 FLOP per parameter and token, at the
    fastest eager pace measured (no recompute)."""
    tokens = total_steps * training.micro_batch_size * training.gradient_accumulation_steps * hp.max_length
    return 4 * parameter_count(shape) * tokens / FASTEST_EAGER_FLOPS


def compiles_layers(shape: dict[str, Any] | None, training: TrainingConfig, hp: TrialHyperparameters,
                    total_steps: int | None) -> bool:
    """training.compile_layers; auto: on for a GPU trial (`shape` given) whose eager training would take
    COMPILE_REPAID_AFTER_S or more. `total_steps` None: the trial's length is not known (a benchmark's
    timed steps): auto stays off. Off on CPU, where torch.compile's generated code is not the
    bottleneck it removes (the host's launches on a GPU)."""
    if training.compile_layers != "auto":
        return training.compile_layers
    if shape is None or total_steps is None or training.liger_kernels is True:  # Liger asked for: not traceable
        return False
    return eager_training_seconds(shape, training, hp, total_steps) >= COMPILE_REPAID_AFTER_S


def dense_mask_attention_ratio(shape: dict[str, Any], tokens: int) -> float:
    """A padding-free micro-batch of `tokens` under SDPA: the FLOPs of attention over its dense
    block-diagonal mask (QK^T and PV over every pair of its tokens, 4 x tokens^2 x attention width a
    layer) over those of the layer's linear projections (2 x tokens x their parameters)."""
    attention_width = shape["num_attention_heads"] * _head_dim(shape)
    return 2 * tokens * attention_width / _linear_parameters_per_layer(shape)


def padding_free_rows(shape: dict[str, Any] | None, model: ModelConfig, training: TrainingConfig,
                      hp: TrialHyperparameters, compiled: bool, on_gpu: bool) -> bool:
    """training.padding_free; auto: padding-free where FlexAttention computes each example alone
    (compiled layers, attention auto or flex_attention), where packing needs it, and on CPU; on other
    GPU trials, padded micro-batches where the dense mask's attention outweighs the linear layers
    (dense_mask_attention_ratio over 1, every example counted at max_length). Measured on an H200:
    six SmolLM2-135M trials at once, 16 x 512 tokens (ratio 2.7), trained 58,412 real tokens/s in all
    padding-free and 77,037 padded, 1.32x (benchmarks/results/2026-12-04-levers); the Llama-3-8B shape
    under SDPA, 8 x 512 (ratio 0.15), 3,619 padding-free and 3,243 padded, 1.12x the other way
    (BENCHMARKS.md, issue 10's run 2)."""
    if training.padding_free != "auto":
        return training.padding_free
    if training.packing or not on_gpu or shape is None:
        return True
    if compiled and model.attention in ("auto", "flex_attention"):
        return True
    return dense_mask_attention_ratio(shape, training.micro_batch_size * hp.max_length) <= 1


def attention_kernel(model: ModelConfig, training: TrainingConfig, compiled: bool, on_gpu: bool) -> str:
    """model.attention; auto: FlexAttention for a GPU trial whose layers are compiled (it is compiled
    into their code) and whose micro-batches are padding-free (its document mask keeps attention
    within each example, where SDPA computes the dense block-diagonal mask over all the micro-batch's
    tokens). Never on CPU: torch (2.13) has no FlexAttention backward there."""
    if model.attention != "auto":
        return model.attention
    return "flex_attention" if on_gpu and compiled and training.padding_free else "sdpa"


def predicted_peak_bytes(shape: dict[str, Any], hp: TrialHyperparameters, training: TrainingConfig,
                         gradient_checkpointing: bool, compute_dtype_bytes: int = 2, activations_kept: float = 0.0) -> float:
    """`activations_kept` (with recompute): the share of what recompute saves that is kept after
    all. torch's activation memory budget is that share by its definition (the partitioner's
    saved bytes, between what full recompute keeps and what none keeps), so the bytes between the
    two estimates scale with it."""
    tokens = training.micro_batch_size * hp.max_length
    activations = activation_bytes_per_token(shape, gradient_checkpointing)
    if gradient_checkpointing and activations_kept:
        activations += activations_kept * (activation_bytes_per_token(shape, False) - activations)
    return (weight_bytes(shape, dense_layer_bytes(training, compute_dtype_bytes)) + lora_bytes(shape, hp) + HEADROOM_BYTES
            + tokens * activations)


def generation_bytes_per_sequence(shape: dict[str, Any], hp: TrialHyperparameters, evaluation: EvaluationConfig,
                                  value_bytes: int) -> int:
    """One generated sequence's KV cache plus the float32 logits of one step over the vocabulary."""
    tokens = hp.max_length + evaluation.max_new_tokens
    return tokens * kv_cache_bytes_per_token(shape, value_bytes) + FLOAT32_BYTES * shape["vocab_size"]


def plan_memory(shape: dict[str, Any] | None, model: ModelConfig, training: TrainingConfig,
                evaluation: EvaluationConfig, hp: TrialHyperparameters, gpu: GpuRequest | None,
                total_steps: int | None = None) -> MemoryPlan:
    """Every memory decision of one trial, and the kernels they depend on; `gpu` None: it trains on
    CPUs (no shape needed). `total_steps`: the steps the whole trial trains (max_rungs x
    steps_per_rung), which compile_layers' auto weighs against a compile; None: unknown, not compiled."""
    if training.packing and training.padding_free is False:
        raise ConfigError("training.packing: true packs examples into padding-free rows; "
                          "set training.padding_free: true or auto, or packing: false")
    compiled = compiles_layers(shape if gpu is not None else None, training, hp, total_steps)
    dtype_name = compute_dtype_name(model, on_gpu=gpu is not None)
    training = training.model_copy(update={"compile_layers": compiled,
                                           "float32_dense_layers": float32_dense_layers(training, dtype_name)})
    _check_activations_kept(training)

    def kernels(training: TrainingConfig) -> dict[str, Any]:  # for the micro-batch as sized
        rows = padding_free_rows(shape, model, training, hp, compiled, on_gpu=gpu is not None)
        return dict(compile_layers=compiled, float32_dense_layers=training.float32_dense_layers, padding_free=rows,
                    attention=attention_kernel(model, training.model_copy(update={"padding_free": rows}), compiled,
                                               on_gpu=gpu is not None),
                    cudnn_attention=_given(model.cudnn_attention, False))  # its per-shape graphs: see the field

    if gpu is None:
        checkpointing = _given(training.gradient_checkpointing, False)  # compute, not memory, limits a CPU
        return MemoryPlan(
            gpu_share=0.0, memory_budget_gb=None, predicted_peak_gb=None,
            gradient_checkpointing=checkpointing,
            activations_kept=_given(training.activations_kept, 0.0) if checkpointing else 1.0,
            fused_lm_head=_given(training.fused_lm_head, False),  # its torch fallback is slower than full logits
            liger_kernels=_cpu_liger(training), **kernels(training),
            micro_batch_size=training.micro_batch_size,
            gradient_accumulation_steps=_cpu_accumulation(training),
            merged_copy=_given(evaluation.merged_copy, False),
            generation_batch_size=_given(evaluation.batch_size, CPU_GENERATION_BATCH),
        )
    if shape is None:
        raise ValueError("a GPU trial is planned from the model's shape")
    dtype_bytes = DTYPE_BYTES[dtype_name]
    dense_bytes = dense_layer_bytes(training, dtype_bytes)
    whole = gpu.gpu_memory_bytes
    packed = gpu.gpus_per_trial == "auto"
    # What the trial may grow to: a whole GPU when its share is sized to fit it, else its fixed share.
    room = gpu.budget_bytes or (whole if packed else whole * min(float(gpu.gpus_per_trial), 1.0))
    # A trial with a memory of its own fills it; one packed by memory keeps its micro-batch, whose
    # growth would ask for a larger share and so fewer trials at once.
    grow = _given(training.grow_micro_batch, not packed or gpu.budget_bytes is not None)
    training, checkpointing = sized_micro_batch(shape, hp, training, dtype_bytes, room, grow)
    kept = activations_kept(shape, hp, training, checkpointing, dtype_bytes, room if grow else None)
    peak = predicted_peak_bytes(shape, hp, training, checkpointing, dtype_bytes, kept)
    if packed:
        if peak > whole:
            raise ConfigError(
                f"a trial with max_length={hp.max_length}, micro_batch_size={training.micro_batch_size}, "
                f"lora_r={hp.lora_r} needs about {peak / GIB:.1f} GiB, more than one GPU's {whole / GIB:.1f} GiB; "
                "lower them, or give whole GPUs (resources.gpus_per_trial: 1 or more)"
            )
        share = min(1.0, max(round(math.ceil(peak / whole / SHARE_STEP) * SHARE_STEP, 2), gpu.least_share or 0.0))
        budget = gpu.budget_bytes or share * whole
    else:
        share, budget = float(gpu.gpus_per_trial), room

    # While the trial evaluates, its weights (dense parts as training keeps them),
    # adapter, gradients and optimizer state stay in memory.
    free = budget - weight_bytes(shape, dense_bytes) - lora_bytes(shape, hp) - HEADROOM_BYTES
    copy = dense_copy_bytes(shape, dtype_bytes)
    # Generating through the model itself, its float32 dense parts get compute-dtype copies for the
    # while (trainables.model.generating_in_compute_dtype), so hidden states and the KV cache are in
    # the compute dtype, as they are in a merged copy. (Left float32, the cache was twice this:
    # measured on an H100, a bf16 estimate then let an 8B evaluation peak 22% over its share.)
    cast = _dense_parameters(shape)[1] * dtype_bytes if dense_bytes != dtype_bytes else 0
    per_sequence = generation_bytes_per_sequence(shape, hp, evaluation, dtype_bytes)
    merged = _given(evaluation.merged_copy, (free - copy) / 2 >= MIN_MERGED_BATCH * per_sequence)
    # Half the free memory goes to generation's KV cache and logits; the rest is slack.
    room_for_sequences = (free - copy if merged else free - cast) / 2
    batch = _given(evaluation.batch_size, max(1, min(MAX_GENERATION_BATCH, int(room_for_sequences / per_sequence))))
    return MemoryPlan(
        gpu_share=share, memory_budget_gb=budget / GIB, predicted_peak_gb=peak / GIB,
        gradient_checkpointing=checkpointing, activations_kept=kept, fused_lm_head=_given(training.fused_lm_head, True),
        liger_kernels=_gpu_liger(training, checkpointing), **kernels(training),
        micro_batch_size=training.micro_batch_size, gradient_accumulation_steps=training.gradient_accumulation_steps,
        merged_copy=merged, generation_batch_size=batch,
    )


def sized_micro_batch(shape: dict[str, Any], hp: TrialHyperparameters, training: TrainingConfig,
                      compute_dtype_bytes: int, room: float, grow: bool) -> tuple[TrainingConfig, bool]:
    """`training` with its micro-batch as the plan has it, and whether it recomputes. Recompute
    (with `gradient_checkpointing: auto`) only where the activations do not fit `room`. With `grow`,
    the same effective batch (micro-batch x accumulation) in as few micro-batches as `room` holds:
    the largest divisor of the effective batch, from the configured micro-batch up, whose predicted
    peak fits, without recompute if that fits too. Fewer micro-batches come before keeping activations: a GPU
    trial's step is host-bound, its cost per micro-batch, and on an H200 the same 8 examples a step
    trained 2.4x faster as one micro-batch with recompute than as 4 of 2 without; keeping the
    activations at the same micro-batch gained 1.4x. With nothing fitting, the configured
    micro-batch, recomputing unless told otherwise (an out-of-memory retry halves it later)."""
    effective = training.micro_batch_size * training.gradient_accumulation_steps
    recompute_choices = [False, True] if training.gradient_checkpointing == "auto" else [training.gradient_checkpointing]
    largest = effective if grow else training.micro_batch_size
    for micro in sorted((d for d in range(training.micro_batch_size, largest + 1) if effective % d == 0),
                        reverse=True):
        candidate = training.model_copy(update={"micro_batch_size": micro,
                                                "gradient_accumulation_steps": effective // micro})
        for recompute in recompute_choices:
            if predicted_peak_bytes(shape, hp, candidate, recompute, compute_dtype_bytes) <= room:
                return candidate, recompute
    return training, _given(training.gradient_checkpointing, True)


KEPT_STEP = 0.1  # activations_kept's auto in tenths: the estimates are not finer than that


def activations_kept(shape: dict[str, Any], hp: TrialHyperparameters, training: TrainingConfig, checkpointing: bool,
                     compute_dtype_bytes: int, room: float | None) -> float:
    """The share of recomputable activations a recomputing trial keeps (training.activations_kept).
    auto, for compiled layers: the largest tenth whose predicted peak fits `room`, what the memory
    left beside the recomputing micro-batch holds; 0 where nothing more fits, and always 0 for
    eager layers, whose checkpoint recomputes whole layers, and for trials packed by memory (`room`
    None: what they keep would ask for a larger share, so fewer trials at once, as a larger
    micro-batch would). 1 for a trial that does not recompute."""
    if not checkpointing:
        return 1.0
    if training.activations_kept != "auto":
        return training.activations_kept
    if not training.compile_layers or room is None:
        return 0.0
    tenths = round(1 / KEPT_STEP)
    for step in range(tenths - 1, 0, -1):  # 1.0 would be no recompute, which the micro-batch's sizing tried first
        if predicted_peak_bytes(shape, hp, training, True, compute_dtype_bytes, step / tenths) <= room:
            return step / tenths
    return 0.0


# Trials sharing one GPU, measured by benchmarks/gpu_sharing.py (H200, Llama-3-8B shape, compiled layers
# with FlexAttention, micro-batch 8 of DialogSum rows at max_length 512, 2 rounds; 2026-12-02, in
# benchmarks/results/2026-12-02-trial-speed-defaults): one trial keeping its activations trained 7,837
# real tokens/s alone (7,043-8,632), and 3 at once 11,858 in all (11,855-11,861): alone, a trial left the
# GPU idle 0.51 of the time it kept it busy, the host's share of each step. Trials recomputing theirs
# trained 7,124 alone (6,358-7,890), and 8,877 and 8,870 in all for 3 and 6 at once: a full GPU does
# 1.34x the work per token with recompute.
SHARED_GPU_RECOMPUTE_COST = 1.34
# The host's share scales with the layers a step launches, the GPU's with parameters x tokens: the idle
# time per decoder layer and step, counted in the GPU time of one parameter-token (4 FLOP on the same
# card). Compiled layers: 0.513 x 8.03e9 parameters x 4096 token slots / 32 layers, from the run above.
# Eager layers launch hundreds of small ops a layer through Python: an eager 8B trial (bf16 dense layers,
# FlexAttention, Liger, mb 16 x 512, no recompute) kept the H200 busy 41 % of a step by the profiler
# (benchmarks/results/2026-12-01-trial-speed-host; it still synced 17 times a step, 6 since), so
# 1.44 x 8.03e9 x 8192 / 32.
HOST_IDLE_PER_LAYER = {True: 5.27e11, False: 2.96e12}  # by compiled layers


@dataclass(frozen=True)
class SharingOption:
    """One way to pack trials onto a GPU: recomputing or keeping activations, each trial's share, how
    many trials that puts on the GPU at once, and their predicted tokens/s in all, as a share of what
    a GPU full of trials keeping theirs trains."""

    recompute: bool
    share: float
    trials: int
    tokens_per_s: float

    def describe(self) -> str:
        what = "recomputing" if self.recompute else "keeping activations"
        return f"{self.trials} {what} ({self.share:g} GPU each): {self.tokens_per_s:.2f}"


def busy_alone(shape: dict[str, Any], micro_batch_size: int, max_length: int, compiled: bool) -> float:
    """The share of a step's time one trial alone keeps the GPU busy (it keeps its activations): the
    rest is the host's, launching the step's work. Large models fill a GPU alone; small ones leave
    most of it for other trials."""
    slots = micro_batch_size * max_length
    idle_per_busy = HOST_IDLE_PER_LAYER[compiled] * shape["num_hidden_layers"] / (parameter_count(shape) * slots)
    return 1 / (1 + idle_per_busy)


def shared_gpu_tokens_per_s(trials: int, busy: float, recompute: bool, compiled: bool = True) -> float:
    """`trials` at once on one GPU, their tokens/s in all as a share of a GPU full of trials keeping
    their activations. Each trial's step is the host's time and the GPU's work (SHARED_GPU_RECOMPUTE_COST
    times more with recompute); together they train as fast as their steps allow until the GPU's work
    fills it. Measured for 1, 3 and 6 trials of the 8B shape with compiled layers, whose recompute the
    compiled code does (the host's time the same); an eager checkpoint runs each layer's forward again
    through Python, so there the host's time grows with the work (assumed, not measured)."""
    work = SHARED_GPU_RECOMPUTE_COST if recompute else 1.0
    host = (1 / busy - 1) * (work if not compiled else 1.0)  # in the GPU time of a kept step's work
    return min(trials / (host + work), 1 / work)


def shares_in_one_gpu(share: float) -> int:
    """How many trials of this share Ray places on one GPU (it never splits a share across two)."""
    return int(1 / share + 1e-9)


def recompute_for_shared_gpu(shape: dict[str, Any], model: ModelConfig, training: TrainingConfig,
                             evaluation: EvaluationConfig, hp: TrialHyperparameters, gpu: GpuRequest,
                             total_steps: int | None, trials_at_once: int | None) -> list[SharingOption]:
    """gradient_checkpointing: auto for trials packed onto GPUs by memory (gpus_per_trial: auto, no
    gpu_memory_gb): recompute makes each trial's share smaller, so more trials fit a GPU, but each
    does more work per token. The options for a trial of `hp` (the sweep's largest), the better
    first: the one whose trials at once (as many as fit, at most `trials_at_once`, what the trials,
    CPUs and max_concurrent_trials allow on one GPU) train more tokens/s in all; keeping on a tie,
    where each trial finishes sooner. Raises ConfigError if neither fits one GPU."""
    options = []
    for recompute in (False, True):
        choice = training.model_copy(update={"gradient_checkpointing": recompute})
        try:
            plan = plan_memory(shape, model, choice, evaluation, hp, gpu, total_steps)
        except ConfigError:
            if recompute and not options:
                raise
            continue  # keeping its activations, the trial would not fit one GPU
        fit = max(1, shares_in_one_gpu(plan.gpu_share))
        trials = min(fit, trials_at_once) if trials_at_once else fit
        busy = busy_alone(shape, plan.micro_batch_size, hp.max_length, plan.compile_layers)
        options.append(SharingOption(recompute, plan.gpu_share, trials,
                                     shared_gpu_tokens_per_s(trials, busy, recompute, plan.compile_layers)))
    return sorted(options, key=lambda option: (-option.tokens_per_s, option.recompute))


def _check_activations_kept(training: TrainingConfig) -> None:
    if training.activations_kept != "auto" and not training.compile_layers:
        raise ConfigError(f"training.activations_kept: {training.activations_kept:g} applies to compiled layers (a "
                          "checkpoint recomputes whole layers); set training.compile_layers: true, or "
                          "activations_kept: auto")


def _cpu_accumulation(training: TrainingConfig) -> int:
    if training.grow_micro_batch is True:
        raise ConfigError("training.grow_micro_batch: true sizes micro-batches to a GPU trial's memory, and these "
                          "trials run on CPUs; set it to auto or false")
    return training.gradient_accumulation_steps


def _cpu_liger(training: TrainingConfig) -> bool:
    if training.liger_kernels is True:
        raise ConfigError("training.liger_kernels: true needs GPU trials (Liger's kernels are Triton, CUDA only); "
                          "set it to auto or false")
    return False


def _gpu_liger(training: TrainingConfig, checkpointing: bool) -> bool:
    """auto: where installed, for a trial that keeps its activations and does not compile its
    layers. On an H200 (8B shape) Liger's kernels trained 1.07x faster in 9 GB less without
    recompute, and 0.91x with it. Compiled layers fuse the norms and SwiGLU themselves, and
    torch.compile (torch 2.11) cannot trace Liger's RMSNorm: on an H200 both sides that had both
    failed in dynamo with an AssertionError (benchmarks/results/2026-12-02-compile-diagnosis)."""
    if training.liger_kernels is True and training.compile_layers:
        raise ConfigError("training.liger_kernels: true with training.compile_layers: true: torch.compile cannot "
                          "trace Liger's RMSNorm; set one of them to false (compiled layers fuse the norms themselves)")
    if training.liger_kernels is True and not liger_installed():
        raise ConfigError("training.liger_kernels: true, but liger-kernel is not installed: "
                          "pip install 'qlora-sweep[liger]', or set it to auto or false")
    return _given(training.liger_kernels, liger_installed() and not checkpointing and not training.compile_layers)


def liger_installed() -> bool:
    return importlib.util.find_spec("liger_kernel") is not None


def _given(value: Any, decided: Any) -> Any:
    """The configured value, or for `auto` the planner's decision."""
    return decided if value == "auto" else value


def nvidia_smi_gpu_memory_bytes() -> int | None:
    """This process's first visible GPU's memory as nvidia-smi (NVIDIA's tool, installed with its driver)
    reports it, without importing torch; None where that cannot say: no nvidia-smi, no GPU visible, or a
    GPU it cannot be asked about by the id CUDA_VISIBLE_DEVICES gives (a MIG instance, say). Why: the
    driver reads each GPU node's memory in a fresh Ray worker before a sweep plans its trials. On an H200
    17-18 s passed between Ray's start and the Tuner's (1.3 s on a 2-core CPU, with no GPU to ask about),
    and a fresh process there took 12-19 s to import torch (benchmarks/results/2026-12-04-preload)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    first = "0" if visible is None else visible.split(",")[0].strip()
    if not first:
        return None
    gpus = nvidia_smi_query("memory.total", "-i", first)
    return _mib_in_bytes(gpus[0][0]) if gpus else None


def nvidia_smi_smallest_gpu_memory_bytes() -> int | None:
    """The memory of this machine's smallest GPU as nvidia-smi reports it, for a driver that plans trials on
    its own node without a Ray worker: a worker takes a second or more to start, and with
    resources.preload_libraries every idle one is busy importing for 15-30 s on an H200 machine. Every GPU
    of the machine counts, the ones CUDA_VISIBLE_DEVICES leaves out too (their order may not be
    nvidia-smi's): on a machine of mixed GPUs that sizes shares by the smallest, as a cluster is. None
    where it cannot say: no nvidia-smi, no GPU given, or MIG (nvidia-smi reports the whole GPU's memory,
    not an instance's)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and (not visible.strip() or "MIG-" in visible):
        return None
    gpus = nvidia_smi_query("memory.total,mig.mode.current")
    if not gpus or any(gpu[1:2] == ["Enabled"] for gpu in gpus):
        return None
    sizes = [_mib_in_bytes(gpu[0]) for gpu in gpus]
    return None if None in sizes else min(sizes)


def nvidia_smi_query(fields: str, *args: str, of: str = "gpu") -> list[list[str]] | None:
    """nvidia-smi's `--query-<of>=fields` (NVIDIA's tool, installed with its driver), a row of fields a GPU
    (of="compute-apps": a process using one); None where it gives no rows: no nvidia-smi, no GPU, none of
    them, or an id it cannot answer for (a MIG instance, say)."""
    try:
        done = subprocess.run(["nvidia-smi", f"--query-{of}={fields}", "--format=csv,noheader,nounits", *args],
                              capture_output=True, text=True, timeout=30, check=True)
    except (OSError, subprocess.SubprocessError) as why:
        logger.debug("nvidia-smi gave no %s (%s)", fields, why)
        return None
    return [[field.strip() for field in line.split(",")] for line in done.stdout.splitlines() if line.strip()] or None


def _mib_in_bytes(field: str) -> int | None:
    """An nvidia-smi count of MiB in bytes; None for what is no count ([N/A])."""
    return int(field) * 2**20 if field.isdigit() else None


def local_gpu_memory_bytes() -> int | None:
    """This process's first visible GPU's memory, None without one (scoring runs where it is asked)."""
    import torch  # heavy: only the trial's own processes and `best --eval-file` call this

    return torch.cuda.get_device_properties(0).total_memory if torch.cuda.is_available() else None
