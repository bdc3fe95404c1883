"""One trial's GPU speed against the plain QLoRA recipe, both measured in one run on one device.

    python benchmarks/trial_speed.py --shape llama3-8b --data ../shared/data/dialogsum \
        --tokenizer ~/.cache/qlora-sweep/models/SmolLM2-135M-Instruct --out trial_speed.json

The model is built from its shape with random weights (speed does not depend on the weights)
and saved once; both sides load it in 4-bit NF4 with bf16 compute and attach the same LoRA
(r=32, alpha=32, all linear layers). The rows are real DialogSum dialogues in the recipe's prompt,
so lengths vary as they really do. The tokenizer is any local one (Llama-3's is on the hub):
ids it lacks get zero LM-head rows so generation never produces them; the LM head keeps the
shape's full vocabulary.

- plain: gradient checkpointing, padded micro-batches, a plain forward with labels (full logits)
  and AdamW step; generation as the recipe leaves it (KV cache off, as checkpointing sets it).
- qlora-sweep: the trial's own code and defaults (TRL SFTTrainer, padding-free micro-batches,
  TRL's fused LM head on a GPU, checkpointing chosen from the memory budget, batched KV-cached
  generation under autocast sized to memory, stopping at `### End`). Its evaluation is timed both
  through the 4-bit model and through `evaluation.merged_copy` (a dense merged copy, built inside
  the timing); `merged_copy_by_default` says which one the trial's `auto` picks at this budget.
- --variant times the trial's training with other settings beside it; --plain-again times the
  plain side once more at the end, which shows how much the card's speed drifted within the run.

Reported per side: real (non-padding) tokens/s, peak GPU memory, MFU, and the wall time to
generate and score ROUGE on the validation dialogues. MFU counts (6 + 2 if recomputing) x the
linear layers' parameters per real token (attention scores left out) against the GPU's dense
bf16 peak. The plain generation is timed on a subset and scaled to the full set (it is marked so).
With --quality-seeds, both sides also train SmolLM2-sized runs from the given --quality-model for the
same optimizer steps and examples and report validation ROUGE-L per seed.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import yaml  # noqa: E402
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
from trainables.model import attach_lora, load_quantized_model, prepare_for_training  # noqa: E402
from trainables.prompt import encode_prompt, load_tokenizer  # noqa: E402
from trainables.report import peak_memory_gb, reset_peak_memory, synchronize_gpu  # noqa: E402
from trainables.train import build_trainer  # noqa: E402

SHAPES = {
    "llama3-8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                      num_key_value_heads=8, vocab_size=128256, rope_theta=500000.0, tie_word_embeddings=False),
    "llama3.2-1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                        num_key_value_heads=8, vocab_size=128256, rope_theta=500000.0, tie_word_embeddings=True),
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=1024, tie_word_embeddings=False),
}
BF16_PEAK_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "A10G": 125e12, "L4": 121e12}
STARTED = time.perf_counter()
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


def mfu(tokens_per_s: float, params: int, recompute: bool) -> float | None:
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name(0)
    peak = next((flops for key, flops in BF16_PEAK_FLOPS.items() if key in name), None)
    return tokens_per_s * (6 + 2 * recompute) * params / peak if peak else None


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


def plain_train(model: Any, rows: Any, tokenizer: Any, micro_batch: int, steps: int, warmup: int,
                learning_rate: float, seed: int, optimizer: Any = None, first_step: int = 0) -> dict[str, float]:
    """Padded micro-batches, full logits, one AdamW step each; timed after `warmup` steps.
    Pass the optimizer and the step reached to continue a run (plain_ray_tune's rungs)."""
    if optimizer is None:
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=learning_rate)
    order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(seed)).tolist()
    model.train()
    tokens, started = 0, None
    for step in range(first_step, first_step + warmup + steps):
        if step == first_step + warmup:
            synchronize_gpu()
            reset_peak_memory()
            started = time.perf_counter()
        examples = [rows[order[(step * micro_batch + i) % len(order)]] for i in range(micro_batch)]
        batch = _pad(examples, tokenizer.pad_token_id)
        with torch.autocast(_device(), dtype=_dtype(), enabled=_device() == "cuda"):
            loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step >= first_step + warmup:
            tokens += int(batch["attention_mask"].sum())
    synchronize_gpu()
    return _speed(tokens, time.perf_counter() - started)


def plain_generate(model: Any, tokenizer: Any, prompts: list[str], max_new_tokens: int, batch_size: int) -> list[str]:
    """The recipe's generation: batches in data order, left padding, KV cache as checkpointing left it (off)."""
    model.eval()
    tokenizer.padding_side = "left"
    outputs = []
    for start in range(0, len(prompts), batch_size):
        batch = tokenizer(prompts[start : start + batch_size], return_tensors="pt", padding=True).to(model.device)
        with torch.no_grad():
            generated = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                                       use_cache=model.config.use_cache, pad_token_id=tokenizer.pad_token_id)
        texts = tokenizer.batch_decode(generated[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
        outputs += [cut_at_end_marker(t, PromptConfig().end_marker) for t in texts]
    return outputs


# --- qlora-sweep's trial ---------------------------------------------------------------------

def trial_plan(path: Path, training: TrainingConfig, evaluation: EvaluationConfig, budget_gb: float | None,
               max_length: int) -> MemoryPlan:
    """The memory plan a sweep's driver would give this trial: one whole GPU, within `budget_gb` when given."""
    gpu_memory = local_gpu_memory_bytes()
    model = ModelConfig(name_or_path=str(path))
    gpu = GpuRequest(gpu_memory, 1, budget_gb * GIB if budget_gb else None) if gpu_memory else None
    hp = TrialHyperparameters(**LORA, learning_rate=1e-4, max_length=max_length)
    return plan_memory(model_shape(model) if gpu else None, model, training, evaluation, hp, gpu)


def trial_model(path: Path, plan: MemoryPlan, max_length: int, seed: int) -> Any:
    base = load_quantized_model(ModelConfig(name_or_path=str(path)))
    torch.manual_seed(seed)
    hp = TrialHyperparameters(**LORA, learning_rate=1e-4, max_length=max_length)
    return attach_lora(prepare_for_training(base, plan.gradient_checkpointing), hp)


def trial_train(model: Any, rows: Any, tokenizer: Any, training: TrainingConfig, steps: int, warmup: int,
                learning_rate: float, max_length: int, folder: Path) -> dict[str, float]:
    class Clock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step == warmup:
                synchronize_gpu()
                reset_peak_memory()
                self.started, self.tokens_at_start = time.perf_counter(), state.num_input_tokens_seen

        def on_step_end(self, args, state, control, **kwargs):
            # Stopped here, after the last optimizer step: the Trainer's closing evaluation and
            # checkpoint are not training speed.
            if state.global_step == warmup + steps:
                synchronize_gpu()
                self.result = _speed(state.num_input_tokens_seen - self.tokens_at_start,
                                     time.perf_counter() - self.started)

    clock = Clock()
    hp = TrialHyperparameters(**LORA, learning_rate=learning_rate, max_length=max_length)
    rung = training.model_copy(update={"steps_per_rung": warmup + steps + 1})
    trainer = build_trainer(model, tokenizer, rows, rows.select(range(min(8, len(rows)))), rung, hp,
                            total_steps=warmup + steps, eval_batch_size=8, output_dir=str(folder), callbacks=[clock])
    trainer.train()
    return clock.result


# --- measuring -------------------------------------------------------------------------------

def measure_shape(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    models = Path(args.model_cache) if args.model_cache else folder
    path = build_random_model(args.shape, args.tokenizer, models / f"random-{args.shape}")
    tokenizer = load_tokenizer(ModelConfig(name_or_path=str(path)))
    data = load_rows(args.data, args.max_length, tokenizer, args.train_examples, args.eval_examples)
    result: dict[str, Any] = {"shape": args.shape, "micro_batch_size": args.micro_batch_size,
                              "max_length": args.max_length, "steps": args.steps, "warmup": args.warmup}

    log(f"{args.shape}: model ready, data tokenized; plain recipe")
    model = plain_model(path, seed=0)
    params = linear_parameters(model)
    plain = plain_train(model, data["train"], tokenizer, args.micro_batch_size, args.steps, args.warmup, 1e-4, 0)
    plain["mfu"] = mfu(plain["tokens_per_s"], params, recompute=True)
    if not args.skip_eval:
        subset = data["prompts"][: args.plain_eval_examples]
        started = time.perf_counter()
        predictions = plain_generate(model, tokenizer, subset, args.max_new_tokens, args.plain_eval_batch)
        rouge_scores(predictions, data["references"][: len(subset)])
        seconds = time.perf_counter() - started
        plain["rouge_eval_s"] = seconds * len(data["prompts"]) / len(subset)
        plain["rouge_eval_extrapolated_from"] = len(subset)
    result["plain"] = plain
    log(f"plain: {plain}")
    del model
    _free()

    budget_gb = args.memory_budget_gb or plain["peak_memory_gb"]
    training = TrainingConfig(micro_batch_size=args.micro_batch_size, padding_free=not args.no_padding_free,
                              gradient_checkpointing=args.gradient_checkpointing)
    evaluation = EvaluationConfig(max_new_tokens=args.max_new_tokens)
    plan = trial_plan(path, training, evaluation, budget_gb, args.max_length)
    model = trial_model(path, plan, args.max_length, seed=0)
    ours = trial_train(model, data["train"], tokenizer, plan.decide_training(training), args.steps, args.warmup,
                       1e-4, args.max_length, folder / "trainer")
    ours.update(mfu=mfu(ours["tokens_per_s"], params, recompute=plan.gradient_checkpointing),
                gradient_checkpointing=plan.gradient_checkpointing, padding_free=training.padding_free,
                memory_budget_gb=budget_gb)
    log(f"qlora-sweep training: {ours}")
    if not args.skip_eval:
        timings = {}
        for merged_copy in (False, True):
            forced = evaluation.model_copy(update={"merged_copy": merged_copy})
            timings[merged_copy] = timed_rouge_evaluation(
                args, model, tokenizer, data, trial_plan(path, training, forced, budget_gb, args.max_length))
        default = timings[False]
        ours.update(rouge_eval_s=default["rouge_eval_s"], generation_batch_size=default["generation_batch_size"],
                    rouge_eval_peak_memory_gb=default["peak_memory_gb"])
        ours["merged_copy"] = timings[True]
        ours["merged_copy_by_default"] = plan.merged_copy
    result["qlora_sweep"] = ours
    result["speedup"] = ours["tokens_per_s"] / plain["tokens_per_s"]
    result["eval_examples"] = len(data["prompts"])
    del model
    _free()
    result["variants"] = {spec: measure_variant(args, spec, path, tokenizer, data, params, budget_gb, folder)
                          for spec in args.variant}
    for variant in result["variants"].values():
        variant["speedup"] = variant["tokens_per_s"] / plain["tokens_per_s"]
    if args.plain_again:
        # The same plain run once more, last: how far the card's speed drifted within this run.
        model = plain_model(path, seed=0)
        again = plain_train(model, data["train"], tokenizer, args.micro_batch_size, args.steps, args.warmup, 1e-4, 0)
        result["plain_again"] = again
        result["speedup_against_plain_again"] = ours["tokens_per_s"] / again["tokens_per_s"]
        log(f"plain again: {again}")
        del model
        _free()
    return result


def measure_variant(args: argparse.Namespace, spec: str, path: Path, tokenizer: Any, data: dict[str, Any],
                    params: int, budget_gb: float, folder: Path) -> dict[str, Any]:
    """qlora-sweep's training with some settings changed, e.g. "micro_batch_size=16,gradient_checkpointing=false"
    (TrainingConfig fields, plus memory_budget_gb); training speed only."""
    settings = {key: yaml.safe_load(value) for key, value in (item.split("=", 1) for item in spec.split(","))}
    budget_gb = settings.pop("memory_budget_gb", budget_gb)
    training = TrainingConfig(**{"micro_batch_size": args.micro_batch_size, "padding_free": not args.no_padding_free,
                                 "gradient_checkpointing": args.gradient_checkpointing, **settings})
    plan = trial_plan(path, training, EvaluationConfig(max_new_tokens=args.max_new_tokens), budget_gb,
                      args.max_length)
    model = trial_model(path, plan, args.max_length, seed=0)
    checkpointing = plan.gradient_checkpointing
    try:
        speed = trial_train(model, data["train"], tokenizer, plan.decide_training(training), args.steps,
                            args.warmup, 1e-4, args.max_length, folder / "variant")
    except Exception as error:  # noqa: BLE001 - one variant running out of memory is a result, not the end of the run
        speed = {"error": f"{type(error).__name__}: {str(error).splitlines()[0][:300]}", "tokens_per_s": 0.0}
    speed.update(mfu=mfu(speed["tokens_per_s"], params, recompute=checkpointing) if speed["tokens_per_s"] else None,
                 gradient_checkpointing=checkpointing, micro_batch_size=training.micro_batch_size,
                 padding_free=training.padding_free, memory_budget_gb=budget_gb)
    log(f"variant {spec}: {speed}")
    del model
    _free()
    return speed


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
    evaluation = RougeEvaluation(tokenizer, PromptConfig(), args.max_length, args.max_new_tokens,
                                 plan.generation_batch_size, plan.merged_copy)
    synchronize_gpu()
    reset_peak_memory()
    started = time.perf_counter()
    evaluation.rouge(model, data["prompts"], data["references"])
    synchronize_gpu()
    timed = {"rouge_eval_s": time.perf_counter() - started, "generation_batch_size": plan.generation_batch_size,
             "peak_memory_gb": peak_memory_gb() if torch.cuda.is_available() else None}
    log(f"ROUGE evaluation (merged_copy={plan.merged_copy}): {timed}")
    return timed


def measure_quality(args: argparse.Namespace, folder: Path) -> list[dict[str, Any]]:
    """Same steps, examples and seed on both sides; validation ROUGE-L after training."""
    path = Path(args.quality_model)
    tokenizer = load_tokenizer(ModelConfig(name_or_path=str(path)))
    data = load_rows(args.data, args.max_length, tokenizer, args.train_examples, args.quality_eval_examples)
    runs = []
    for seed in args.quality_seeds:
        row: dict[str, Any] = {"seed": seed}
        for side in ("plain", "qlora_sweep"):
            if side == "plain":
                model = plain_model(path, seed)
                plain_train(model, data["train"], tokenizer, args.micro_batch_size, args.quality_steps, 0, 2e-4, seed)
            else:
                training = TrainingConfig(micro_batch_size=args.micro_batch_size, seed=seed)
                plan = trial_plan(path, training, EvaluationConfig(), None, args.max_length)
                model = trial_model(path, plan, args.max_length, seed)
                trial_train(model, data["train"], tokenizer, plan.decide_training(training), args.quality_steps, 0,
                            2e-4, args.max_length, folder / f"quality-{seed}")
            scoring = RougeEvaluation(tokenizer, PromptConfig(), args.max_length, args.max_new_tokens, 32)
            row[side] = scoring.rouge(model, data["prompts"], data["references"])["rougeL"]
            log(f"quality seed {seed} {side}: ROUGE-L {row[side]:.4f}")
            del model
            _free()
        runs.append(row)
    return runs


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
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--train-examples", type=int, default=2000)
    parser.add_argument("--eval-examples", type=int, default=500)
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--plain-eval-examples", type=int, default=16)
    parser.add_argument("--plain-eval-batch", type=int, default=16)
    parser.add_argument("--memory-budget-gb", type=float, help="the trial's memory share (default: plain's peak)")
    parser.add_argument("--gradient-checkpointing", default="auto", choices=["auto", "true", "false"])
    parser.add_argument("--no-padding-free", action="store_true")
    parser.add_argument("--variant", action="append", default=[],
                        help="also time qlora-sweep's training with these settings, e.g. micro_batch_size=16 "
                             "or gradient_checkpointing=false,memory_budget_gb=40 (repeatable)")
    parser.add_argument("--plain-again", action="store_true",
                        help="time the plain recipe's training again at the end, to show drift within the run")
    parser.add_argument("--skip-eval", action="store_true", help="time training only (no ROUGE evaluation)")
    parser.add_argument("--model-cache", help="keep the random-weight model here and reuse it in a later run")
    parser.add_argument("--quality-model", help="a local model folder for the ROUGE-L comparison (e.g. SmolLM2)")
    parser.add_argument("--quality-seeds", type=int, nargs="*", default=[])
    parser.add_argument("--quality-steps", type=int, default=60)
    parser.add_argument("--quality-eval-examples", type=int, default=500)
    args = parser.parse_args(argv)
    if args.gradient_checkpointing != "auto":
        args.gradient_checkpointing = args.gradient_checkpointing == "true"

    with tempfile.TemporaryDirectory(prefix="trial-speed-") as scratch:
        result = {"device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
                  "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"), "command": " ".join(sys.argv)}
        result.update(measure_shape(args, Path(scratch)))
        if args.quality_seeds:
            result["quality_rougeL"] = measure_quality(args, Path(scratch))
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
