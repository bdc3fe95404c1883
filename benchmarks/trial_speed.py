"""One trial's GPU speed against the plain QLoRA recipe, both measured in one run on one device,
by a protocol that survives the card's warm-up.

    python benchmarks/trial_speed.py --shape llama3-8b --data ../shared/data/dialogsum \
        --tokenizer ~/.cache/qlora-sweep/models/SmolLM2-135M-Instruct --out trial_speed.json

The model is built from its shape with random weights (speed does not depend on the weights)
and saved once; every side loads it in 4-bit NF4 with bf16 compute and attaches the same LoRA
(r=32, alpha=32, all linear layers). The rows are real DialogSum dialogues in the recipe's prompt,
so lengths vary as they really do. The tokenizer is any local one (Llama-3's is on the hub):
ids it lacks get zero LM-head rows so generation never produces them; the LM head keeps the
shape's full vocabulary.

Sides, all loaded at once and kept:
- plain: gradient checkpointing, padded micro-batches, a plain forward with labels (full logits)
  and an AdamW step; generation as the recipe leaves it (KV cache off, as checkpointing sets it).
- qlora_sweep: the trial's own code and defaults (TRL SFTTrainer, micro-batches padding-free or
  padded as padding_free: auto decides, TRL's fused LM head on a GPU), planned as a sweep's driver
  plans it within the plain side's own peak memory: the equal-memory comparison. Its
  compile_layers: auto weighs a whole trial of --trial-steps steps (by default as long as
  configs/llama3_8b_dialogsum.yaml's largest: compiled, with FlexAttention, for the 8B shape).
- one_gpu: the same trial code planned for the whole GPU, at --one-gpu-micro-batch-size.
- --variant: more settings of the trial's training, each a side of its own.

The protocol (the H200 speeds up by ~40 % over its first minutes of load): an untimed warm-up of
at least --warmup-s over the sides, then --rounds rounds of timed segments in a fixed order
(A B C A B C ...), each --segment-warmup untimed steps then --steps timed ones. Reported per side:
the median and the min-max of real (non-padding) tokens/s, its own peak memory (what it allocated
above what the other sides held), MFU against the card's measured dense bf16 peak, and for the
sides named by --eval-side the wall time to generate and score ROUGE on the validation dialogues.
`summary` holds equal_memory_speedup (the fastest trial side within plain's own peak),
one_gpu_speedup (the fastest trial side of all), eval_500_s (the quickest evaluation of any side,
as a trial's first rung meets it: a compile it does counts), plain_tokens_per_s and protocol, which
names those sides and paths and gives beside them the defaults' own speedups, the quickest
evaluation within plain's peak, and the quickest of a later rung (compiled code reused). With --eval-examples under
500, eval_500_s is the time on those scaled to 500 (marked in protocol). MFU counts
(4 + 2 if recomputing) x the linear layers' parameters per real token: the forward pass, the
backward pass's input gradients (the frozen 4-bit weights take none of their own; LoRA's are
small), the recomputed forward (attention scores left out).
The plain generation is timed on a subset and scaled to the full set (it is marked so).

--profile-steps N: after the rounds and the evaluation, each side (or each --profile-side) trains
N more steps under torch.profiler (after its untimed warm-up steps, so the Trainer's set-up is not
in it); `profile` gives, per side, the kernels' time by what they compute (4-bit dequantization,
matmul, attention, LM head, optimizer, elementwise), the top kernels, how busy the GPU was, and
from two more steps under CUDA's sync debug mode how often a step makes the host wait for the GPU,
and at which lines. With
--host-profile, two more steps under cProfile say which Python functions the host's time goes to.

--compiled-decoding-eval: the same for sides generating through the merged copy, with
`evaluation.compiled_decoding` (a static KV cache whose decoding step transformers compiles),
timed twice: first (the compile in it), then again through a new merged copy (a later rung's).

--profile-generation [SIDE]: after the training profiles, where one generation batch of SIDE
(default qlora_sweep) spends its time, as its plan generates: the merged copy's build, a batch
cut to one new token (prefill) and the whole batch (so the time per decoded token), then a batch
of --profile-new-tokens new tokens under torch.profiler (the GPU's share) and under cProfile (the
host's time by Python function).

--continuous-batching-eval: the trial sides' ROUGE evaluation also through transformers'
continuous batching (`evaluation.continuous_batching`), timed beside the fixed batches, with its
ROUGE-L (the same summaries give the same figure).

--quality-seeds: plain and qlora-sweep (and each --quality-variant) train --quality-model (SmolLM2)
alike: the same steps on the same examples in the same order, from the same LoRA initialization,
at a constant learning rate; `quality_rougeL` holds validation ROUGE-L per seed and side, each
side's difference from plain, and how far its trained LoRA weights lie from plain's.
--quality-only skips the speed protocol.

Liger's kernels (a side with liger_kernels=true) patch transformers' Llama module for the whole
process (RoPE, and the norm and MLP classes of models built later) when the side's Trainer starts;
trial_train puts the module back after each training run, so every other side trains as in a
process of its own. (Left, Liger's RoPE, which torch.compile cannot trace, split every compiled
side after it into pieces: benchmarks/results/2026-12-02-trial-speed-merged-copy-bug.)
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import gc
import json
import re
import statistics
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import yaml  # noqa: E402
from torch.autograd import DeviceType  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402
from torch.utils.data import SequentialSampler  # noqa: E402
from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training  # noqa: E402
from transformers import (  # noqa: E402
    AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig, LlamaConfig, TrainerCallback,
)

from trainables.config import (  # noqa: E402
    DataConfig, EvaluationConfig, MemoryPlan, ModelConfig, PromptConfig, TrainingConfig, TrialHyperparameters,
)
from trainables.data import load_dialogues, tokenize_for_training  # noqa: E402
from trainables.evaluation import RougeEvaluation, cut_at_end_marker, rouge_scores  # noqa: E402
from trainables.memory import (  # noqa: E402
    GIB, GpuRequest, dense_copy_bytes, local_gpu_memory_bytes, model_shape, plan_memory,
)
from trainables.model import (  # noqa: E402
    attach_lora, compile_decoder_layers, load_quantized_model, model_for_generation, prepare_for_training,
)
from trainables.prompt import encode_prompt, load_tokenizer  # noqa: E402
from trainables.report import peak_memory_gb, reset_peak_memory, synchronize_gpu  # noqa: E402
from trainables.train import build_trainer  # noqa: E402

from compile_check import dynamo_counts  # noqa: E402 - beside this script

SHAPES = {
    "llama3-8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                      num_key_value_heads=8, vocab_size=128256, rope_theta=500000.0, tie_word_embeddings=False),
    "llama3.2-1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                        num_key_value_heads=8, vocab_size=128256, rope_theta=500000.0, tie_word_embeddings=True),
    # The sweep benchmark's model (SmolLM2-135M-Instruct's config.json): its trials are host-bound, so
    # a lever that pays at 8B can cost here, and only a run by turns at this shape says which.
    "smollm2-135m": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                         num_key_value_heads=3, vocab_size=49152, rope_theta=100000.0, tie_word_embeddings=True),
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=1024, tie_word_embeddings=False),
}
# Dense bf16 matrix rate per card. The H200's is measured (the device tool's KINDS.md: 769 to 798
# TFLOP/s for 8192^3 products on random data), not its datasheet's ~990; the others are datasheets'.
BF16_PEAK_FLOPS = {"H200": 790e12, "H100": 989e12, "A100": 312e12, "A10G": 125e12, "L4": 121e12}
STARTED = time.perf_counter()
EVAL_TARGET_DIALOGUES = 500  # eval_500_s: ROUGE on this many validation dialogues
SYNC_STEPS = 2  # steps run with CUDA's sync debug mode (its warnings slow the host: not profiled, not timed)
QUALITY_TOLERANCE = 0.005  # ROUGE-L (0..1): half a point
QUALITY_LORA = dict(lora_r=32, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear")  # no dropout: the
# sides would draw different masks
LORA = dict(lora_r=32, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear")


def build_random_model(shape: str, tokenizer_path: str, folder: Path) -> Path:
    """The shape with random weights, saved in bf16; an earlier run's copy in `folder` is reused."""
    if (folder / "config.json").is_file() and (folder / "tokenizer_config.json").is_file():
        return folder

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)
    values = dict(SHAPES[shape])
    values["vocab_size"] = max(values["vocab_size"], len(tokenizer))
    config = LlamaConfig(**values, max_position_embeddings=8192, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id, bos_token_id=None)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    with torch.device(device):  # built where it runs, in bf16: an 8B model initializes in seconds on a GPU
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    with torch.no_grad():
        model.lm_head.weight[len(tokenizer):] = 0  # ids the tokenizer cannot decode never win
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    del model
    _free()
    return folder


def log(message: str) -> None:
    """Progress on stderr, so a run cut off at a time limit still shows how far it got."""
    print(f"[trial_speed {time.perf_counter() - STARTED:7.1f}s] {message}", file=sys.stderr, flush=True)


def linear_parameters(model: Any) -> int:
    """Parameters of the linear layers (4-bit ones counted at their logical size), LM head included."""
    total = 0
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and "lora_" not in name:  # peft's A/B matrices are tiny extras
            total += module.in_features * module.out_features
    return total


def peak_flops() -> float | None:
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name(0)
    return next((flops for key, flops in BF16_PEAK_FLOPS.items() if key in name), None)


def mfu(tokens_per_s: float, params: int, recompute: bool) -> float | None:
    peak = peak_flops()
    return tokens_per_s * (4 + 2 * recompute) * params / peak if peak else None


def load_rows(data: str, max_length: int, tokenizer: Any, train: int, validation: int) -> dict[str, Any]:
    dialogues = load_dialogues(DataConfig(path=data, max_train_examples=train, max_validation_examples=validation))
    return {
        "train": tokenize_for_training(dialogues["train"], tokenizer, PromptConfig(), max_length),
        "prompts": [encode_prompt(tokenizer, PromptConfig(), d, max_length) for d in dialogues["validation"]["dialogue"]],
        "references": list(dialogues["validation"]["summary"]),
    }


# --- the plain recipe ------------------------------------------------------------------------

def plain_model(path: Path, seed: int, lora: dict[str, Any] = LORA) -> Any:
    quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                      bnb_4bit_compute_dtype=_dtype(), bnb_4bit_use_double_quant=False)
    base = AutoModelForCausalLM.from_pretrained(path, quantization_config=quantization, dtype=_dtype(),
                                                device_map=_device())
    base = prepare_model_for_kbit_training(base, use_gradient_checkpointing=True)
    base.config.use_cache = False  # as the recipe does next to checkpointing; its generation then runs without a cache
    torch.manual_seed(seed)
    config = LoraConfig(r=lora["lora_r"], lora_alpha=lora["lora_alpha"], lora_dropout=lora["lora_dropout"],
                        target_modules=lora["target_modules"], task_type="CAUSAL_LM")
    return get_peft_model(base, config)


def training_order(rows: int, seed: int) -> list[int]:
    """The rows' order in plain_train: the order the Trainer's seeded sampler draws them in for a
    trial of the same training.seed (tests/test_benchmarks.py), so the two train the same rows step
    for step and their losses compare by rung."""
    return torch.randperm(rows, generator=torch.Generator().manual_seed(seed)).tolist()


def plain_train(model: Any, rows: Any, tokenizer: Any, micro_batch: int, steps: int, warmup: int,
                learning_rate: float, seed: int, optimizer: Any = None, first_step: int = 0,
                shuffle: bool = True, around: Any = None, schedule: Any = None) -> dict[str, float]:
    """Padded micro-batches, full logits, one AdamW step each with the Trainer's defaults (no weight
    decay, gradients clipped to norm 1); timed after `warmup` steps. Pass the optimizer and the step
    reached to continue a run (plain_ray_tune's rungs), and `schedule`, a torch LR scheduler stepped
    after each optimizer step (without one the rate stays `learning_rate`). `shuffle` False: the rows
    in their order. `around`: a context manager held over the timed steps only (a profiler).
    `train_loss`: the timed steps' mean loss, as the Trainer logs it over a rung (summed on the device
    and read once at the end: no wait of its own in a step)."""
    trained = [p for p in model.parameters() if p.requires_grad]
    if optimizer is None:
        optimizer = torch.optim.AdamW(trained, lr=learning_rate, weight_decay=0.0)
    order = training_order(len(rows), seed) if shuffle else list(range(len(rows)))
    model.train()
    tokens, started, loss_sum = 0, None, None
    timed = contextlib.ExitStack()
    for step in range(first_step, first_step + warmup + steps):
        if step == first_step + warmup:
            synchronize_gpu()
            reset_peak_memory()
            if around is not None:
                timed.enter_context(around)
            started = time.perf_counter()
        examples = [rows[order[(step * micro_batch + i) % len(order)]] for i in range(micro_batch)]
        batch = _pad(examples, tokenizer.pad_token_id)
        with torch.autocast(_device(), dtype=_dtype(), enabled=_device() == "cuda"):
            loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trained, 1.0)
        optimizer.step()
        if schedule is not None:
            schedule.step()
        optimizer.zero_grad(set_to_none=True)
        if step >= first_step + warmup:
            tokens += int(batch["attention_mask"].sum())
            loss_sum = loss.detach() if loss_sum is None else loss_sum + loss.detach()
    synchronize_gpu()
    seconds = time.perf_counter() - started
    timed.close()
    return {**_speed(tokens, seconds), "train_loss": float(loss_sum) / steps if steps else None}


def plain_generate(model: Any, tokenizer: Any, prompts: list[str], max_new_tokens: int, batch_size: int,
                   use_cache: bool | None = None) -> list[str]:
    """The recipe's generation: batches in data order, left padding, KV cache as checkpointing left
    it (off), unless `use_cache` says otherwise."""
    model.eval()
    tokenizer.padding_side = "left"
    outputs = []
    for start in range(0, len(prompts), batch_size):
        batch = tokenizer(prompts[start : start + batch_size], return_tensors="pt", padding=True).to(model.device)
        with torch.no_grad():
            generated = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                                       use_cache=model.config.use_cache if use_cache is None else use_cache,
                                       pad_token_id=tokenizer.pad_token_id)
        texts = tokenizer.batch_decode(generated[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
        outputs += [cut_at_end_marker(t, PromptConfig().end_marker) for t in texts]
    return outputs


# --- qlora-sweep's trial ---------------------------------------------------------------------

def trial_plan(path: Path, training: TrainingConfig, evaluation: EvaluationConfig, budget_gb: float | None,
               max_length: int, trial_steps: int, attention: str = "auto") -> MemoryPlan:
    """The memory plan a sweep's driver would give this trial: one whole GPU, within `budget_gb` when
    given, for a trial that trains `trial_steps` steps in all (compile_layers' auto weighs them)."""
    gpu_memory = local_gpu_memory_bytes()
    model = ModelConfig(name_or_path=str(path), attention=attention)
    gpu = GpuRequest(gpu_memory, 1, budget_gb * GIB if budget_gb else None) if gpu_memory else None
    hp = TrialHyperparameters(**LORA, learning_rate=1e-4, max_length=max_length)
    return plan_memory(model_shape(model) if gpu else None, model, training, evaluation, hp, gpu, trial_steps)


def trial_model(path: Path, decided: TrainingConfig, max_length: int, seed: int, attention: str,
                lora: dict[str, Any] = LORA) -> Any:
    """The trial's model as `decided` (the training section with its plan's decisions in) and its
    plan's `attention` have it."""
    base = load_quantized_model(ModelConfig(name_or_path=str(path), attention=attention))
    torch.manual_seed(seed)
    hp = TrialHyperparameters(**lora, learning_rate=1e-4, max_length=max_length)
    model = attach_lora(prepare_for_training(base, decided.gradient_checkpointing, decided.float32_dense_layers), hp)
    if decided.compile_layers:
        # fresh=False: the other sides' compiled code stays (they share the process)
        compile_decoder_layers(model, fresh=False, activations_kept=decided.activations_kept)
    return model


def trial_train(model: Any, rows: Any, tokenizer: Any, training: TrainingConfig, steps: int, warmup: int,
                learning_rate: float, max_length: int, folder: Path, in_order: bool = False,
                around: Any = None, callbacks: tuple[TrainerCallback, ...] = ()) -> dict[str, float]:
    """The trial's Trainer for `warmup` + `steps` steps, timed after the warm-up; `in_order`: the rows
    in their order instead of the Trainer's shuffle (the quality check feeds both sides alike).
    `around`: a context manager held over the timed steps only, not the Trainer's set-up.
    `callbacks`: the Trainer's, beside the clock (compile_cost.py times each step)."""
    timed = contextlib.ExitStack()

    class Clock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step == warmup:
                synchronize_gpu()
                reset_peak_memory()
                if around is not None:
                    timed.enter_context(around)
                self.started, self.tokens_at_start = time.perf_counter(), state.num_input_tokens_seen

        def on_step_end(self, args, state, control, **kwargs):
            # Stopped here, after the last optimizer step: the Trainer's closing evaluation and
            # checkpoint are not training speed.
            if state.global_step == warmup + steps:
                synchronize_gpu()
                self.result = _speed(state.num_input_tokens_seen - self.tokens_at_start,
                                     time.perf_counter() - self.started)
                timed.close()

    clock = Clock()
    hp = TrialHyperparameters(**LORA, learning_rate=learning_rate, max_length=max_length)
    rung = training.model_copy(update={"steps_per_rung": warmup + steps + 1})
    with modeling_module_restored():
        trainer = build_trainer(model, tokenizer, rows, rows.select(range(min(8, len(rows)))), rung, hp,
                                total_steps=warmup + steps, eval_batch_size=8, output_dir=str(folder),
                                callbacks=[clock, *callbacks])
        if in_order:
            # the Trainer's own rows: packed (training.packing) they are fewer than `rows`
            trainer._get_train_sampler = lambda *args, **kwargs: SequentialSampler(trainer.train_dataset)
        trainer.train()
    return clock.result


@contextlib.contextmanager
def modeling_module_restored(module: Any = None) -> Iterator[None]:
    """transformers' modeling module of a model (Llama's unless given) as it was before, after what
    runs inside: Liger's kernels replace its RoPE function and its norm and MLP classes for the whole
    process when a Trainer with liger_kernels starts (the model's own modules Liger patches per
    instance). The sides share one process; a trial has one of its own."""
    if module is None:
        from transformers.models.llama import modeling_llama as module

    before = dict(vars(module))
    try:
        yield
    finally:
        for name, value in before.items():
            if vars(module).get(name) is not value:
                setattr(module, name, value)


# --- measuring -------------------------------------------------------------------------------

class Side:
    """One way of training the same model on the same rows, kept loaded for the whole run, so that
    the timed segments can alternate between sides without reloading."""

    def __init__(self, name: str, model: Any, train: Any, recompute: bool, details: dict[str, Any]):
        self.name, self.model, self.train, self.recompute, self.details = name, model, train, recompute, details
        self.static_bytes = 0  # what the side holds between segments (weights, LoRA), measured at load
        self.plan: MemoryPlan | None = None  # a trial side's memory plan (its evaluation follows it)
        self.tokens_per_s: list[float] = []
        self.own_peak_gb: list[float] = []


def load_side(name: str, load: Any, sides: list[Side]) -> Side:
    before = torch.cuda.memory_allocated() if torch.cuda.is_available() else 0
    side = load()
    side.name = name
    side.static_bytes = (torch.cuda.memory_allocated() if torch.cuda.is_available() else 0) - before
    sides.append(side)
    return side


def segment(side: Side, args: argparse.Namespace, timed: bool) -> dict[str, float]:
    """`args.segment_warmup` untimed steps, then `args.steps` timed ones. The side's own peak is
    what it allocated above what was resident when the segment began, plus what it holds itself."""
    synchronize_gpu()
    start = torch.cuda.memory_allocated() if torch.cuda.is_available() else 0
    speed = side.train(args.steps, args.segment_warmup)
    own = ((torch.cuda.max_memory_allocated() - start + side.static_bytes) / GIB
           if torch.cuda.is_available() else None)  # train() resets the peak after its warm-up steps
    speed["own_peak_gb"] = own
    if timed:
        side.tokens_per_s.append(speed["tokens_per_s"])
        side.own_peak_gb.append(own or 0.0)
    return speed


def warm_up(sides: list[Side], args: argparse.Namespace, seconds: float) -> float:
    """Untimed load on the GPU, side after side, until `seconds` have passed (the card speeds up
    over its first minutes of load); returns how long it took. Every side runs at least one segment,
    however little time is left: its first compiles, and a compile must never land in a timed round."""
    started, passes = time.perf_counter(), 0
    while passes == 0 or time.perf_counter() - started < seconds:
        passes += 1
        for side in [side for side in sides if "error" not in side.details]:
            segment_started = time.perf_counter()  # the first segment of a side includes its kernels' compilation
            compiled_before = dynamo_counts()
            try:
                speed = segment(side, args, timed=False)
            except Exception as error:  # noqa: BLE001 - as in the timed rounds: a failing variant is a result
                if not side.name.startswith("variant"):
                    raise
                side.details["error"] = _error_text(error)
                _free()
                continue
            side.details.setdefault("warm_up_tokens_per_s", []).append(round(speed["tokens_per_s"]))
            compiled = dynamo_counts(since=compiled_before)
            if compiled["graphs"] or compiled["graph_breaks"]:  # what its first segment compiled, and where it broke
                side.details.setdefault("compiled", compiled)
            elif side.details.get("compile_layers") and "compiled" not in side.details:
                # Each model's layers compile with a backend of their own (InductorRecomputing), so a
                # compiled side that compiled nothing ran code it did not compile: say so
                side.details["compiled"] = {**compiled, "note": "no graph of its own: code compiled before ran"}
            side.details.setdefault("warm_up_segment_s", []).append(round(time.perf_counter() - segment_started, 1))
    return time.perf_counter() - started


def plain_side(path: Path, data: dict[str, Any], tokenizer: Any, args: argparse.Namespace) -> Side:
    model = plain_model(path, seed=0)
    train = lambda steps, warmup, around=None: plain_train(  # noqa: E731
        model, data["train"], tokenizer, args.micro_batch_size, steps, warmup, 1e-4, 0, around=around)
    return Side("plain", model, train, recompute=True,
                details={"micro_batch_size": args.micro_batch_size, "gradient_checkpointing": True,
                         "padding_free": False, "lm_head": "full logits"})


def trial_side(path: Path, data: dict[str, Any], tokenizer: Any, args: argparse.Namespace, settings: dict[str, Any],
               budget_gb: float | None, folder: Path) -> Side:
    """qlora-sweep's trial code with its defaults, `settings` (TrainingConfig fields) changed, planned
    within `budget_gb` (None: the whole GPU), as a sweep's driver plans it."""
    settings = dict(settings)
    attention = settings.pop("attention", "auto")  # a ModelConfig field; the rest are TrainingConfig's
    training = TrainingConfig(**{"micro_batch_size": args.micro_batch_size,
                                 "padding_free": False if args.no_padding_free else "auto",
                                 "gradient_checkpointing": args.gradient_checkpointing, **settings})
    evaluation = EvaluationConfig(max_new_tokens=args.max_new_tokens)
    plan = trial_plan(path, training, evaluation, budget_gb, args.max_length, args.trial_steps, attention)
    decided = plan.decide_training(training)
    model = trial_model(path, decided, args.max_length, seed=0, attention=plan.attention)
    train = lambda steps, warmup, around=None, callbacks=(): trial_train(  # noqa: E731
        model, data["train"], tokenizer, decided, steps, warmup, 1e-4, args.max_length, folder / "trainer",
        around=around, callbacks=callbacks)
    side = Side("trial", model, train, recompute=plan.gradient_checkpointing,
                details={"micro_batch_size": decided.micro_batch_size, "gradient_checkpointing": plan.gradient_checkpointing,
                         "padding_free": decided.padding_free, "fused_lm_head": plan.fused_lm_head,
                         "liger_kernels": plan.liger_kernels, "float32_dense_layers": decided.float32_dense_layers,
                         "gradient_accumulation_steps": decided.gradient_accumulation_steps,
                         "compile_layers": decided.compile_layers, "activations_kept": decided.activations_kept,
                         "memory_budget_gb": plan.memory_budget_gb, "predicted_peak_gb": plan.predicted_peak_gb,
                         "attention": plan.attention, "settings": settings})
    side.plan = plan
    return side


def summarize_side(side: Side, params: int) -> dict[str, Any]:
    median = statistics.median(side.tokens_per_s)
    return {**side.details, "tokens_per_s": median, "tokens_per_s_min": min(side.tokens_per_s),
            "tokens_per_s_max": max(side.tokens_per_s), "tokens_per_s_each": [round(v) for v in side.tokens_per_s],
            "own_peak_gb": max(side.own_peak_gb) if side.own_peak_gb else None,
            "resident_gb": side.static_bytes / GIB, "mfu": mfu(median, params, side.recompute)}


def measure_shape(args: argparse.Namespace, folder: Path, header: dict[str, Any]) -> dict[str, Any]:
    """The protocol: every side loaded and kept; an untimed warm-up of at least --warmup-s over all
    of them (it also measures the plain side's own peak, the equal-memory budget); then --rounds
    rounds of timed segments in a fixed order (plain, qlora-sweep, one GPU, variants: A B C A B C...);
    per side the median and the min-max of real tokens/s, and its own peak memory."""
    models = Path(args.model_cache) if args.model_cache else folder
    path = build_random_model(args.shape, args.tokenizer, models / f"random-{args.shape}")
    tokenizer = load_tokenizer(ModelConfig(name_or_path=str(path)))
    data = load_rows(args.data, args.max_length, tokenizer, args.train_examples, args.eval_examples)
    result: dict[str, Any] = {"shape": args.shape, "micro_batch_size": args.micro_batch_size,
                              "max_length": args.max_length, "eval_examples": len(data["prompts"])}
    log(f"{args.shape}: model ready, data tokenized")

    sides: list[Side] = []
    plain = load_side("plain", lambda: plain_side(path, data, tokenizer, args), sides)
    params = linear_parameters(plain.model)
    # The plain side alone first: its own peak is the budget of the equal-memory side.
    warmed = warm_up([plain], args, args.warmup_s / 3)
    budget_gb = args.memory_budget_gb or _own_peak_of_a_segment(plain, args)
    load_side("qlora_sweep", lambda: trial_side(path, data, tokenizer, args, {}, budget_gb, folder), sides)
    load_side("one_gpu", lambda: trial_side(
        path, data, tokenizer, args, {"micro_batch_size": args.one_gpu_micro_batch_size}, None, folder), sides)
    for spec in args.variant:
        settings = _settings(spec)
        variant_budget = settings.pop("memory_budget_gb", budget_gb)
        try:
            load_side(f"variant {spec}",
                      lambda: trial_side(path, data, tokenizer, args, settings, variant_budget, folder), sides)
        except Exception as error:  # noqa: BLE001 - a variant that cannot load (a kernel not installed) is a result
            failed = Side(f"variant {spec}", None, None, False, {"error": _error_text(error)})
            log(f"{failed.name}: {failed.details['error']}")
            sides.append(failed)
            _free()
    warmed += warm_up(sides, args, max(0.0, args.warmup_s - warmed))
    log(f"warmed up for {warmed:.0f} s; timing {args.rounds} rounds of {[s.name for s in sides]}")
    for round_ in range(args.rounds):
        for side in [side for side in sides if "error" not in side.details]:
            try:
                speed = segment(side, args, timed=True)
            except Exception as error:  # noqa: BLE001 - a variant that fails (out of memory, a kernel) is a result
                if not side.name.startswith("variant"):
                    raise
                side.details["error"] = _error_text(error)
                log(f"{side.name}: {side.details['error']}")
                _free()
                continue
            log(f"round {round_ + 1} {side.name}: {speed['tokens_per_s']:.0f} tokens/s, own peak "
                f"{speed['own_peak_gb'] or 0:.1f} GB")
        # What is timed so far, in case the run is cut short.
        Path(args.out).with_suffix(".rounds.json").write_text(json.dumps(
            {side.name: {"tokens_per_s_each": side.tokens_per_s, "own_peak_gb": side.own_peak_gb, **side.details}
             for side in sides}, indent=1, default=str))

    # Written after each stage, so a run cut off at the device's time limit keeps what it measured:
    # the speed summary first, then the evaluation (a target too), then the profile (a diagnosis).
    by_name = {side.name: summarize_side(side, params) if side.tokens_per_s else {**side.details} for side in sides}
    result["sides"] = by_name
    stage = {"rounds": args.rounds, "warm_up_s": round(warmed), "order": [side.name for side in sides],
             "eval_examples": len(data["prompts"])}
    result.update(summarized(by_name, args, stage, evaluated=False))
    write_result(args, header, result)
    if not args.skip_eval:
        for side in sides:
            if side.name in args.eval_side and "error" not in side.details:
                by_name[side.name].update(timed_rouge_evaluation(args, side.model, tokenizer, data, side.plan))
                write_result(args, header, result)
        by_name["plain"].update(plain_evaluation(args, plain.model, tokenizer, data))
        result.update(summarized(by_name, args, stage, evaluated=True))
        write_result(args, header, result)
    if args.profile_steps:
        result["profile"] = profile_sides(sides, args, tokenizer, data)
        write_result(args, header, result)
    for side in sides:
        del side.model
    sides.clear()
    _free()
    return result


def summarized(by_name: dict[str, Any], args: argparse.Namespace, stage: dict[str, Any],
               evaluated: bool) -> dict[str, Any]:
    """The `summary` object (and a `summary_note` where there is no equal-memory result) from the
    sides measured so far; before the evaluation, eval_500_s is None and protocol says it is pending."""
    plain_speed = by_name["plain"]["tokens_per_s"]
    equal_memory, one_gpu_best = best_sides(by_name)
    # Timed on --eval-examples dialogues; scaled to the 500 of the target when fewer (marked so)
    to_500 = EVAL_TARGET_DIALOGUES / stage["eval_examples"]
    trial_sides = {name: side for name, side in by_name.items() if name != "plain"}
    evaluation_s, evaluation_path = fastest_evaluation(trial_sides, to_500)
    equal_memory_evaluation_s, equal_memory_evaluation_path = fastest_evaluation(
        {name: side for name, side in trial_sides.items() if within_plain_memory(by_name, name)}, to_500)
    # What an evaluation costs once the first has compiled what it compiles (every later rung's)
    later_rungs_s, later_rungs_path = fastest_evaluation(trial_sides, to_500, {**EVALUATION_PATHS, **LATER_RUNG_PATHS})
    summary: dict[str, Any] = {
        "equal_memory_speedup": round(by_name[equal_memory]["tokens_per_s"] / plain_speed, 3) if equal_memory else None,
        "one_gpu_speedup": round(by_name[one_gpu_best]["tokens_per_s"] / plain_speed, 3),
        "eval_500_s": evaluation_s,
        "plain_tokens_per_s": round(plain_speed),
        "protocol": {
            "equal_memory_side": equal_memory, "one_gpu_side": one_gpu_best,
            "evaluation": "timed" if evaluated else ("skipped" if args.skip_eval else "pending (the run ended first)"),
            "eval_500_path": evaluation_path,
            "equal_memory_eval_500_s": equal_memory_evaluation_s,
            "eval_500_extrapolated_from": (stage["eval_examples"] if stage["eval_examples"] != EVAL_TARGET_DIALOGUES
                                           else None),
            "equal_memory_eval_500_path": equal_memory_evaluation_path,
            "later_rungs_eval_500_s": later_rungs_s, "later_rungs_eval_500_path": later_rungs_path,
            "default_equal_memory_speedup": (round(by_name["qlora_sweep"]["tokens_per_s"] / plain_speed, 3)
                                             if within_plain_memory(by_name, "qlora_sweep") else None),
            "default_one_gpu_speedup": round(by_name["one_gpu"]["tokens_per_s"] / plain_speed, 3),
            "warm_up_s": stage["warm_up_s"], "rounds": stage["rounds"], "order": stage["order"],
            "per_segment": f"{args.segment_warmup} untimed steps, then {args.steps} timed",
            "statistic": "median of the rounds; min-max beside it in sides",
            "memory": "own peak: allocated above what the other sides held resident",
            "mfu_peak_flops": peak_flops(),
        },
    }
    result: dict[str, Any] = {"summary": summary}
    if not equal_memory:
        result["summary_note"] = (f"every trial side's own peak exceeded plain's {by_name['plain']['own_peak_gb']:.1f} "
                                  "GB: no equal-memory result")
    return result


def write_result(args: argparse.Namespace, header: dict[str, Any], result: dict[str, Any]) -> None:
    """The JSON as far as the run got (main writes it once more at the end)."""
    Path(args.out).write_text(json.dumps({**header, **result}, indent=2, default=str) + "\n", encoding="utf-8")


def within_plain_memory(by_name: dict[str, Any], name: str) -> bool:
    return (by_name[name].get("own_peak_gb") or 0) <= (by_name["plain"]["own_peak_gb"] or 0) * 1.01


def best_sides(by_name: dict[str, Any]) -> tuple[str | None, str]:
    """The fastest trial side within the plain side's own peak memory (None if none is), and the
    fastest trial side of all (every side fitted the GPU, or it would have failed)."""
    timed = {name: side for name, side in by_name.items() if name != "plain" and side.get("tokens_per_s")}
    fastest = sorted(timed, key=lambda name: -timed[name]["tokens_per_s"])
    equal = [name for name in fastest if within_plain_memory(by_name, name)]
    return (equal[0] if equal else None), fastest[0]


EVALUATION_PATHS = {"fixed batches": "rouge_eval_s", "continuous batching": "rouge_eval_continuous_s",
                    "compiled decoding": "rouge_eval_compiled_s"}
LATER_RUNG_PATHS = {"compiled decoding, compiled code reused (a later rung)": "rouge_eval_compiled_again_s"}


def fastest_evaluation(sides: dict[str, Any], scale: float = 1.0,
                       paths: dict[str, str] = EVALUATION_PATHS) -> tuple[float | None, str | None]:
    """The quickest timed ROUGE evaluation among `sides` by `paths` (fixed batches, continuous
    batching or compiled decoding, each as a trial's first evaluation meets it: a compile counts),
    times `scale`, and whose and which it was."""
    timed = {f"{name}: {path}": side[key] for name, side in sides.items()
             for path, key in paths.items() if side.get(key) is not None}
    if not timed:
        return None, None
    path = min(timed, key=timed.get)
    return round(timed[path] * scale, 1), path


def _own_peak_of_a_segment(side: Side, args: argparse.Namespace) -> float:
    """The side's own peak memory in one more untimed segment (GB)."""
    speed = segment(side, args, timed=False)
    return round(speed["own_peak_gb"], 2) if speed["own_peak_gb"] else None


def plain_evaluation(args: argparse.Namespace, model: Any, tokenizer: Any, data: dict[str, Any]) -> dict[str, Any]:
    """The recipe's generation (no KV cache), timed on a subset and scaled to the whole set."""
    subset = data["prompts"][: args.plain_eval_examples]
    started = time.perf_counter()
    predictions = plain_generate(model, tokenizer, subset, args.max_new_tokens, args.plain_eval_batch)
    rouge_scores(predictions, data["references"][: len(subset)])
    seconds = time.perf_counter() - started
    return {"rouge_eval_s": seconds * len(data["prompts"]) / len(subset), "rouge_eval_extrapolated_from": len(subset)}


def timed_rouge_evaluation(args: argparse.Namespace, model: Any, tokenizer: Any, data: dict[str, Any],
                           plan: MemoryPlan) -> dict[str, Any]:
    """The trial's ROUGE evaluation on every validation dialogue, as `plan` has it, timed; through the
    merged copy, building the copy counts."""
    budget = plan.memory_budget_gb * GIB if plan.memory_budget_gb else None
    if plan.merged_copy and budget is not None:
        copy = dense_copy_bytes(model_shape(ModelConfig(name_or_path=model.config.name_or_path)), 2)
        if torch.cuda.memory_allocated() + copy > budget:
            return {"skipped": f"the dense copy ({copy / GIB:.1f} GB) does not fit the memory budget "
                               f"({budget / GIB:.1f} GB) beside the training model"}
    evaluation = planned_evaluation(args, tokenizer, plan)
    timed = {**_timed_rouge(evaluation, model, data, ""), "generation_batch_size": plan.generation_batch_size}
    if args.continuous_batching_eval:  # the same evaluation through transformers' continuous batching
        try:
            timed.update(_timed_rouge(dataclasses.replace(evaluation, continuous_batching=True), model, data,
                                      "_continuous"))
        except Exception as error:  # noqa: BLE001 - a lever that fails here (another transformers) is a result
            timed["continuous_error"] = _error_text(error)
            _free()
    if args.compiled_decoding_eval and plan.merged_copy:  # a static cache through the copy, compiled on a GPU
        # Twice: first as a trial's first rung meets it (the compile in it), then through a new
        # merged copy with the compiled code there already, as every later rung of the trial.
        compiled = dataclasses.replace(evaluation, compiled_decoding=True)
        try:
            timed.update(_timed_rouge(compiled, model, data, "_compiled"))
            timed.update(_timed_rouge(compiled, model, data, "_compiled_again"))
        except Exception as error:  # noqa: BLE001 - as continuous batching's: a result, not the end of the run
            timed["compiled_error"] = _error_text(error)
            _free()
    log(f"ROUGE evaluation (merged_copy={plan.merged_copy}): {timed}")
    return timed


def planned_evaluation(args: argparse.Namespace, tokenizer: Any, plan: MemoryPlan) -> RougeEvaluation:
    """The trial's ROUGE evaluation as its plan has it: generation batch and merged copy."""
    return RougeEvaluation(tokenizer, PromptConfig(), args.max_length, args.max_new_tokens,
                           plan.generation_batch_size, plan.merged_copy)


def _timed_rouge(evaluation: RougeEvaluation, model: Any, data: dict[str, Any], suffix: str) -> dict[str, Any]:
    synchronize_gpu()
    reset_peak_memory()
    started = time.perf_counter()
    scores = evaluation.rouge(model, data["prompts"], data["references"])
    synchronize_gpu()
    return {f"rouge_eval{suffix}_s": time.perf_counter() - started, f"rougeL{suffix}": scores["rougeL"],
            f"peak_memory{suffix}_gb": peak_memory_gb() if torch.cuda.is_available() else None}


def measure_quality(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    """The fast path against the plain recipe, trained alike: the same optimizer steps on the same
    examples in the same order (one seeded permutation, no shuffle on either side), a constant
    learning rate, no weight decay, gradients clipped to norm 1, the same LoRA initialization. What
    differs is only how each side computes (padded or padding-free micro-batches, full logits or the
    fused LM head, recompute, each --quality-variant's settings). Validation ROUGE-L after training,
    every side scored by the same greedy generation; per seed, each side's difference from plain."""
    path = Path(args.quality_model)
    tokenizer = load_tokenizer(ModelConfig(name_or_path=str(path)))
    data = load_rows(args.data, args.max_length, tokenizer, args.train_examples, args.quality_eval_examples)
    sides: dict[str, dict[str, Any] | None] = {"plain": None, "qlora_sweep": {}}
    sides.update({f"variant {spec}": _settings(spec) for spec in args.quality_variant})
    learning_rate = 2e-4
    # Side after side, each over every seed (Liger's process-wide patches are undone after each
    # training run: trial_train)
    runs = [{"seed": seed} for seed in args.quality_seeds]
    plain_adapters: dict[int, dict[str, torch.Tensor]] = {}
    rows_of_seed = {seed: data["train"].select(torch.randperm(
        len(data["train"]), generator=torch.Generator().manual_seed(seed)).tolist()) for seed in args.quality_seeds}
    for name, settings in sides.items():
        for run in runs:
            seed = run["seed"]
            rows = rows_of_seed[seed]
            if settings is None:
                model = plain_model(path, seed, QUALITY_LORA)
                trained = plain_train(model, rows, tokenizer, args.micro_batch_size, args.quality_steps, 0,
                                      learning_rate, seed, shuffle=False)
            else:
                try:
                    model, trained = quality_trial(args, path, settings, seed, rows, tokenizer, learning_rate,
                                                   folder / f"quality-{seed}-{len(run)}")
                except Exception as error:  # noqa: BLE001 - a variant that fails (a kernel, a compile) is a result
                    run.setdefault("errors", {})[name] = _error_text(error)
                    log(f"quality seed {seed} {name}: {run['errors'][name]}")
                    _free()
                    continue
            run[name] = quality_scoring(args, tokenizer).rouge(model, data["prompts"], data["references"])["rougeL"]
            # What the side trained on: the same for sides trained alike, more for a packed one (its
            # micro-batches hold more examples)
            run.setdefault("real_tokens_trained", {})[name] = trained["real_tokens"]
            adapter = {key: p.detach().float().cpu() for key, p in model.named_parameters() if "lora_" in key}
            if settings is None:
                plain_adapters[seed] = adapter
            else:
                run.setdefault("minus_plain", {})[name] = run[name] - run["plain"]
                # How far the side's trained LoRA weights lie from plain's: what float rounding leaves
                # apart when both trained alike, far more when they did not (order, schedule, init).
                run.setdefault("adapter_vs_plain", {})[name] = _relative_distance(adapter, plain_adapters[seed])
            log(f"quality seed {seed} {name}: ROUGE-L {run[name]:.4f}")
            del model
            _free()
            Path(args.out).with_suffix(".quality.json").write_text(json.dumps(runs, indent=1))
    return {
        "runs": runs,
        "within_half_a_point": {name: all(name in run and abs(run["minus_plain"][name]) <= QUALITY_TOLERANCE
                                          for run in runs)
                                for name in sides if name != "plain"},
        "tolerance_rougeL": QUALITY_TOLERANCE,
        "steps": args.quality_steps, "micro_batch_size": args.micro_batch_size, "learning_rate": learning_rate,
        "validation_examples": len(data["prompts"]),
    }


def quality_trial(args: argparse.Namespace, path: Path, settings: dict[str, Any], seed: int, rows: Any,
                  tokenizer: Any, learning_rate: float, folder: Path) -> tuple[Any, dict[str, float]]:
    """qlora-sweep's trial with `settings`, trained on `rows` in order, as measure_quality's sides are;
    the model and its training's speed record."""
    settings = dict(settings)
    attention = settings.pop("attention", "auto")
    training = TrainingConfig(**{"micro_batch_size": args.micro_batch_size, "seed": seed,
                                 "lr_scheduler": "constant", **settings})
    plan = trial_plan(path, training, EvaluationConfig(), None, args.max_length, args.quality_steps, attention)
    decided = plan.decide_training(training)
    model = trial_model(path, decided, args.max_length, seed, plan.attention, QUALITY_LORA)
    trained = trial_train(model, rows, tokenizer, decided, args.quality_steps, 0, learning_rate, args.max_length,
                          folder, in_order=True)
    return model, trained


def quality_scoring(args: argparse.Namespace, tokenizer: Any) -> RougeEvaluation:
    """One scorer for every side: greedy generation through a merged bf16 copy on a GPU (the
    adapted 4-bit model generates the same summaries, tests/test_gpu.py, several times slower)."""
    on_gpu = torch.cuda.is_available()
    return RougeEvaluation(tokenizer, PromptConfig(), args.max_length, args.max_new_tokens, 128 if on_gpu else 32,
                           merged_copy=on_gpu)


def _relative_distance(weights: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]) -> float:
    """||weights - reference|| / ||reference|| over every LoRA matrix (the same names on both sides)."""
    if weights.keys() != reference.keys():
        raise ValueError("the sides' LoRA weights differ in names")
    difference = sum(float((weights[k] - reference[k]).pow(2).sum()) for k in reference)
    return (difference / sum(float(reference[k].pow(2).sum()) for k in reference)) ** 0.5


def _error_text(error: Exception) -> str:
    """A failing side or lever, as its result records it: the error's type, first line and the
    innermost line it was raised at (an assertion's message is often empty); its whole traceback
    goes to the log."""
    frames = traceback.extract_tb(error.__traceback__)
    at = f" (at {Path(frames[-1].filename).name}:{frames[-1].lineno})" if frames else ""
    log("".join(traceback.format_exception(error))[-6000:])
    return f"{type(error).__name__}: {(str(error).splitlines() or [''])[0][:300]}{at}"


def _settings(spec: str) -> dict[str, Any]:
    """`a=1,b=true` as a side's settings (TrainingConfig fields, and ModelConfig's attention)."""
    return {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in spec.split(","))}


# --- where the time goes -----------------------------------------------------------------------

# Kernel (GPU) or aten op (CPU) names to what they compute; the first pattern that matches wins.
KERNEL_CATEGORIES = (
    ("4-bit dequantization", r"dequant|kgemm_4bit|gemv_4bit|bitsandbytes"),
    ("attention", r"flash|fmha|attention|attn|flex|_tem_"),
    ("LM head and cross-entropy", r"cross_entropy|log_softmax|logsumexp|nll_loss|entropy|lm_head"),
    ("optimizer and clipping", r"multi_tensor|adam|foreach"),
    ("matmul", r"gemm|nvjet|cutlass|xmma|cublas|matmul|aten::mm|aten::addmm|aten::bmm|aten::linear"),
    ("elementwise: norms, activations, RoPE, casts, copies", r"."),
)


ANNOTATION = re.compile(r"^\w+(\.\w+)*#\w+(\.\w+)*$")  # Optimizer.step#AdamW.step; kernels' own names have '#' too


def kernel_category(name: str) -> str:
    lowered = name.lower()
    return next(category for category, pattern in KERNEL_CATEGORIES if re.search(pattern, lowered))


def time_breakdown(events: Any, seconds: float, top: int | None = 15) -> dict[str, Any]:
    """Self time by kernel on a GPU (by aten op on CPU), grouped by KERNEL_CATEGORIES. `busy` is
    kernel time over the profiled wall time: well under 1 means the GPU waits on the host
    (kernel launches, Python), which no faster kernel fixes. `top` None: every kernel."""
    on_gpu = torch.cuda.is_available()
    rows = []
    for event in events:
        if getattr(event, "is_user_annotation", False) or ANNOTATION.match(event.key):
            continue  # a range marked on the GPU's timeline (Optimizer.step#AdamW.step), not a kernel: counted twice
        if on_gpu and event.device_type == DeviceType.CUDA:
            rows.append((event.key, event.self_device_time_total, event.count))
        elif not on_gpu and event.key.startswith(("aten::", "bitsandbytes::")):
            rows.append((event.key, event.self_cpu_time_total, event.count))
    rows = [row for row in rows if row[1] > 0]
    total = sum(row[1] for row in rows) or 1
    categories: dict[str, float] = {}
    for name, micros, _ in rows:
        category = kernel_category(name)
        categories[category] = categories.get(category, 0.0) + micros
    rows.sort(key=lambda row: -row[1])
    return {
        "counted": "CUDA kernels' self time" if on_gpu else "aten ops' self CPU time",
        "counted_s": round(total / 1e6, 3), "wall_s": round(seconds, 3),
        "busy": round(total / 1e6 / seconds, 3) if on_gpu else None,
        "by_category": {name: round(micros / total, 3) for name, micros in
                        sorted(categories.items(), key=lambda item: -item[1])},
        "top": [{"name": name[:160], "s": round(micros / 1e6, 6), "share": round(micros / total, 3), "calls": calls}
                for name, micros, calls in rows[:top]],
    }


@contextlib.contextmanager
def profiling(into: dict[str, Any]) -> Iterator[None]:
    """What runs inside, under torch.profiler; its time broken down (time_breakdown) into `into`."""
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    synchronize_gpu()
    with profile(activities=activities) as profiler:
        started = time.perf_counter()
        yield
        synchronize_gpu()
        seconds = time.perf_counter() - started
    into.update(time_breakdown(profiler.key_averages(), seconds))


def profiled(work: Any) -> dict[str, Any]:
    """`work()` under torch.profiler, its time broken down (time_breakdown)."""
    breakdown: dict[str, Any] = {}
    with profiling(breakdown):
        work()
    return breakdown


@contextlib.contextmanager
def host_profiling(into: dict[str, Any], steps: int, top: int = 25, per: str = "step") -> Iterator[None]:
    """Where the host's time goes inside, by Python function (cProfile): per step, the functions
    with the most time of their own (a C call that launches kernels or waits for the GPU counts
    there) and with the most time under them. torch.profiler's busy figure says the GPU waits on
    the host; this says on what."""
    import cProfile
    import pstats

    profiler = cProfile.Profile()
    synchronize_gpu()
    started = time.perf_counter()
    profiler.enable()
    try:
        yield
    finally:
        profiler.disable()
    synchronize_gpu()
    stats = pstats.Stats(profiler).stats  # (file, line, name) -> (calls, primitive calls, self s, cumulative s, callers)

    def where(key: tuple[str, int, str]) -> str:
        file, line, name = key
        return f"{Path(file).name}:{line}({name})" if line else name

    def ranked(column: int) -> list[dict[str, Any]]:
        rows = sorted(stats.items(), key=lambda item: -item[1][column])[:top]
        return [{"function": where(key), "self_s": round(value[2] / steps, 4), "cumulative_s": round(value[3] / steps, 4),
                 "calls": round(value[1] / steps, 1)} for key, value in rows]

    into["host"] = {"steps": steps, "wall_s_per_step": round((time.perf_counter() - started) / steps, 4),
                    "note": f"cProfile's own overhead included; per {per}", "by_self": ranked(2),
                    "by_cumulative": ranked(3)}


SYNC_WARNING = re.compile(r"synchroniz", re.IGNORECASE)


@contextlib.contextmanager
def counting_syncs(into: dict[str, Any], steps: int) -> Iterator[None]:
    """Where the host waits for the GPU inside: CUDA's sync debug mode warns at each synchronizing
    call (.item(), a tensor's truth value, a copy to the host); the warnings' Python lines, counted
    per step into `into`. A wait ends the queue of kernels the host had launched ahead, so the GPU
    then idles while the host launches the next ones."""
    if not torch.cuda.is_available():
        into["syncs_per_step"] = None  # nothing to wait for on a CPU
        yield
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            yield
        finally:
            torch.cuda.set_sync_debug_mode("default")
    sites = collections.Counter(f"{Path(w.filename).name}:{w.lineno}" for w in caught if SYNC_WARNING.search(str(w.message)))
    into["syncs_per_step"] = round(sum(sites.values()) / steps, 1)
    into["sync_sites_per_step"] = {site: round(count / steps, 1) for site, count in sites.most_common(12)}


def profile_sides(sides: list[Side], args: argparse.Namespace, tokenizer: Any, data: dict[str, Any]) -> dict[str, Any]:
    """After the timed rounds: each side's training for --profile-steps steps, and with
    --profile-generation one generation batch of that side as its plan has it; untimed, the
    profiler's overhead included."""
    result: dict[str, Any] = {"steps": args.profile_steps, "note": "steady steps (after each side's untimed "
                              "warm-up steps), profiler overhead included: compare shares and busy, not these times "
                              "with the rounds'"}
    for side in [side for side in sides if "error" not in side.details
                 and (not args.profile_side or side.name in args.profile_side)]:
        # Steady steps only: each side's untimed warm-up steps first, as in the rounds (the Trainer's
        # set-up is not in the profile); then a short run that records where the host waits.
        breakdown: dict[str, Any] = {}
        side.train(args.profile_steps, args.segment_warmup, around=profiling(breakdown))
        side.train(SYNC_STEPS, 1, around=counting_syncs(breakdown, SYNC_STEPS))
        if args.host_profile:
            side.train(SYNC_STEPS, 1, around=host_profiling(breakdown, SYNC_STEPS))
        result[side.name] = breakdown
        log(f"profiled {side.name}: {breakdown['by_category']}, busy {breakdown['busy']}, "
            f"syncs per step {breakdown['syncs_per_step']}")
    if args.profile_generation:
        result.update(profile_generation(sides, args, tokenizer, data))
    return result


def profile_generation(sides: list[Side], args: argparse.Namespace, tokenizer: Any,
                       data: dict[str, Any]) -> dict[str, Any]:
    """Where one generation batch of the --profile-generation side goes, as its plan generates
    (fixed batches; through the merged copy where the plan says so): phases timed alone, then a
    short batch under torch.profiler and under cProfile. The torch.profiler trace of a whole batch
    took minutes to summarize on the H200's host, hence the short one."""
    side = next((side for side in sides if side.name == args.profile_generation), None)
    if side is None or side.plan is None or "error" in side.details:
        return {"generation": {"error": f"no trial side {args.profile_generation!r} to profile"}}
    plan = side.plan
    evaluation = planned_evaluation(args, tokenizer, plan)
    batch = data["prompts"][: plan.generation_batch_size]
    result: dict[str, Any] = {"side": side.name, "dialogues": len(batch), "merged_copy": plan.merged_copy,
                              "max_new_tokens": args.max_new_tokens}

    def timed(work: Any) -> float:
        synchronize_gpu()
        started = time.perf_counter()
        work()
        synchronize_gpu()
        return time.perf_counter() - started

    if plan.merged_copy:
        def build_copy() -> None:
            with model_for_generation(side.model, merged_copy=True):
                synchronize_gpu()
        result["merged_copy_s"] = round(timed(build_copy), 3)
    one_token = dataclasses.replace(evaluation, max_new_tokens=1)
    result["one_new_token_s"] = round(timed(lambda: one_token.summaries(side.model, batch)), 3)
    result["whole_batch_s"] = round(timed(lambda: evaluation.summaries(side.model, batch)), 3)
    if args.max_new_tokens > 1:  # random weights stop at no end marker: every step decodes the whole batch
        result["per_decoded_token_ms"] = round(
            1000 * (result["whole_batch_s"] - result["one_new_token_s"]) / (args.max_new_tokens - 1), 2)
    short = dataclasses.replace(evaluation, max_new_tokens=min(args.profile_new_tokens, args.max_new_tokens))
    result["profiled_new_tokens"] = short.max_new_tokens
    result["kernels"] = profiled(lambda: short.summaries(side.model, batch))
    with host_profiling(result, steps=1, per="batch"):
        short.summaries(side.model, batch)
    phases = {key: value for key, value in result.items() if key not in ("kernels", "host")}
    log(f"profiled one generation batch of {side.name}: {phases}, kernels {result['kernels']['by_category']}, "
        f"busy {result['kernels']['busy']}")
    return {"generation": result}


def _pad(examples: list[dict], pad_id: int) -> dict[str, Any]:
    longest = max(len(e["input_ids"]) for e in examples)
    ids = torch.full((len(examples), longest), pad_id)
    labels = torch.full((len(examples), longest), -100)
    mask = torch.zeros((len(examples), longest), dtype=torch.long)
    for i, e in enumerate(examples):
        n = len(e["input_ids"])
        ids[i, :n], labels[i, :n], mask[i, :n] = torch.tensor(e["input_ids"]), torch.tensor(e["labels"]), 1
    return {k: v.to(_device()) for k, v in {"input_ids": ids, "labels": labels, "attention_mask": mask}.items()}


def _speed(tokens: int, seconds: float) -> dict[str, float]:
    peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None
    return {"tokens_per_s": tokens / seconds, "real_tokens": tokens, "seconds": seconds, "peak_memory_gb": peak}


def _device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _dtype():
    return torch.bfloat16 if torch.cuda.is_available() else torch.float32


def _free() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="llama3-8b")
    parser.add_argument("--data", required=True, help="folder with train.jsonl and validation.jsonl")
    parser.add_argument("--tokenizer", required=True, help="a local tokenizer folder")
    parser.add_argument("--out", required=True, help="JSON file to write")
    parser.add_argument("--micro-batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--steps", type=int, default=10, help="timed optimizer steps per segment")
    parser.add_argument("--segment-warmup", type=int, default=2, help="untimed steps before each timed segment")
    parser.add_argument("--warmup-s", type=float, default=60, help="untimed load on the GPU before any timing")
    parser.add_argument("--rounds", type=int, default=3, help="timed segments per side, sides alternating")
    parser.add_argument("--one-gpu-micro-batch-size", type=int, default=16)
    parser.add_argument("--trial-steps", type=int, default=1200,
                        help="steps a whole trial trains at --micro-batch-size and --max-length, which the trial "
                        "sides' compile_layers: auto weighs against a compile (default: the tokens of "
                        "configs/llama3_8b_dialogsum.yaml's largest trial, 6 rungs of 50 steps of 16 examples at "
                        "1024 tokens, at micro-batch 8 and 512 tokens)")
    parser.add_argument("--train-examples", type=int, default=2000)
    parser.add_argument("--eval-examples", type=int, default=500)
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--plain-eval-examples", type=int, default=16)
    parser.add_argument("--plain-eval-batch", type=int, default=16)
    parser.add_argument("--memory-budget-gb", type=float, help="the trial's memory share (default: plain's peak)")
    parser.add_argument("--gradient-checkpointing", default="auto", choices=["auto", "true", "false"])
    parser.add_argument("--no-padding-free", action="store_true")
    parser.add_argument("--variant", action="append", default=[],
                        help="one more side: qlora-sweep's training with these settings, e.g. fused_lm_head=false "
                             "or gradient_checkpointing=false,memory_budget_gb=40 (repeatable)")
    parser.add_argument("--skip-eval", action="store_true", help="time training only (no ROUGE evaluation)")
    parser.add_argument("--eval-side", action="append",
                        help="a side whose ROUGE evaluation is timed (repeatable; default qlora_sweep and one_gpu), "
                             "e.g. 'variant float32_dense_layers=false'")
    parser.add_argument("--model-cache", help="keep the random-weight model here and reuse it in a later run")
    parser.add_argument("--quality-model", help="a local model folder for the ROUGE-L comparison (e.g. SmolLM2)")
    parser.add_argument("--quality-seeds", type=int, nargs="*", default=[])
    parser.add_argument("--quality-steps", type=int, default=60)
    parser.add_argument("--quality-eval-examples", type=int, default=500)
    parser.add_argument("--quality-only", action="store_true", help="only the quality check (--quality-seeds)")
    parser.add_argument("--quality-variant", action="append", default=[],
                        help="one more side in the quality check: the trial with these settings, as --variant")
    parser.add_argument("--compiled-decoding-eval", action="store_true",
                        help="time the ROUGE evaluation of sides that generate through the merged copy also with "
                             "evaluation.compiled_decoding (a static cache transformers compiles)")
    parser.add_argument("--continuous-batching-eval", action="store_true",
                        help="time the ROUGE evaluation through continuous batching too")
    parser.add_argument("--profile-steps", type=int, default=0,
                        help="after the rounds, profile each side for this many steps")
    parser.add_argument("--profile-side", action="append", default=[],
                        help="with --profile-steps, profile only this side (repeatable; default every side)")
    parser.add_argument("--host-profile", action="store_true",
                        help="with --profile-steps, also each profiled side's host time by Python function (cProfile)")
    parser.add_argument("--profile-generation", nargs="?", const="qlora_sweep", metavar="SIDE",
                        help="with --profile-steps, also where one generation batch of SIDE (default qlora_sweep) "
                             "spends its time")
    parser.add_argument("--profile-new-tokens", type=int, default=16,
                        help="new tokens of the generation batch profiled under torch.profiler and cProfile")
    args = parser.parse_args(argv)
    if args.quality_only and not (args.quality_seeds and args.quality_model):
        parser.error("--quality-only needs --quality-model and --quality-seeds")
    args.eval_side = args.eval_side or ["qlora_sweep", "one_gpu"]
    if args.gradient_checkpointing != "auto":
        args.gradient_checkpointing = args.gradient_checkpointing == "true"

    # Sides share this process, so every compiled side's graphs (compile_layers, FlexAttention,
    # compiled decoding) count against dynamo's per-function limit (8), past which code runs
    # eagerly without a word; a trial compiles alone in its own (trainables.model).
    torch._dynamo.config.recompile_limit = 64
    with tempfile.TemporaryDirectory(prefix="trial-speed-") as scratch:
        result = {"device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
                  "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"), "command": " ".join(sys.argv)}
        if not args.quality_only:
            result.update(measure_shape(args, Path(scratch), result))
        if args.quality_seeds:
            result["quality_rougeL"] = measure_quality(args, Path(scratch))
    write_result(args, {}, result)
    print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
