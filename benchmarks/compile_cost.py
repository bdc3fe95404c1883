"""What a trial's first steps cost when its decoder layers compile (training.compile_layers), one
step at a time, in a process of its own: the compile a trial's first rung pays, the recompiles after
it (padding-free micro-batches change length from step to step), and torch.compile's own account
of where the time went. Run it twice in a row to see what a later worker on the same machine pays
with inductor's on-disk caches warm.

    python benchmarks/compile_cost.py --shape llama3.2-1b --data DIALOGSUM --tokenizer TOKENIZER \
        --out compile_cost.json --setting attention=flex_attention,compile_layers=true --memory-budget-gb 15

Why it exists: on an H200 (2026-12-02, benchmarks/results/2026-12-02-trial-speed-1b) the 1B shape's
first compiled side (micro-batch 32, activations kept) spent 594 s in its first untimed segment,
where the 8B shape's first compiled side had spent 108 s; compile_layers' auto assumes a compile
repays itself after 240 s of eager training. The JSON is written after every step, so a run cut
short keeps the steps it timed; nothing else is written beside it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT)]

from trainables.config import TrainingConfig  # noqa: E402 - light: pydantic, no torch

# trial_speed.SHAPES' names, without importing torch to check one
SHAPES = ("llama3-8b", "llama3.2-1b", "smollm2-135m", "tiny")


def first_steps(args: argparse.Namespace, settings: dict[str, Any], folder: Path) -> dict[str, Any]:
    """Load the side as a sweep's driver would plan it, then train args.steps steps in one Trainer:
    per step its wall time and what dynamo compiled in it. The compile's cost: what the steps took
    beyond their tokens at the pace of the steps that compiled nothing."""
    import torch
    import torch._dynamo.utils

    from compile_check import dynamo_counts
    from transformers import TrainerCallback
    from trial_speed import build_random_model, load_rows, log, trial_side
    from trainables.report import synchronize_gpu
    from trainables.config import ModelConfig
    from trainables.prompt import load_tokenizer

    started = time.perf_counter()
    models = Path(args.model_cache) if args.model_cache else folder
    path = build_random_model(args.shape, args.tokenizer, models / f"random-{args.shape}")
    tokenizer = load_tokenizer(ModelConfig(name_or_path=str(path)))
    data = load_rows(args.data, args.max_length, tokenizer, args.train_examples, 1)
    side_args = SimpleNamespace(micro_batch_size=args.micro_batch_size, no_padding_free=False,
                                gradient_checkpointing="auto", max_new_tokens=96, max_length=args.max_length,
                                trial_steps=args.trial_steps)
    side = trial_side(path, data, tokenizer, side_args, settings, args.memory_budget_gb, folder)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    result: dict[str, Any] = {
        "shape": args.shape, "setting": args.setting, "device": device, "torch": torch.__version__,
        "command": " ".join(sys.argv), "load_s": round(time.perf_counter() - started, 1),
        "side": {k: side.details[k] for k in ("micro_batch_size", "gradient_checkpointing", "compile_layers",
                                              "activations_kept", "attention", "memory_budget_gb")},
        "steps": []}
    log(f"{args.shape} {args.setting}: loaded in {result['load_s']} s: {result['side']}")

    class StepTimer(TrainerCallback):
        """Each optimizer step's wall time, the GPU synchronized at both ends, and what dynamo
        compiled in it; one Trainer, so the micro-batches change length as a trial's do."""

        def on_step_begin(self, args_, state, control, **kwargs):
            synchronize_gpu()
            self.before, self.started, self.tokens = dynamo_counts(), time.perf_counter(), state.num_input_tokens_seen

        def on_step_end(self, args_, state, control, **kwargs):
            synchronize_gpu()
            compiled = dynamo_counts(since=self.before)
            row = {"step": state.global_step, "s": round(time.perf_counter() - self.started, 2),
                   "tokens": state.num_input_tokens_seen - self.tokens, "graphs": compiled["graphs"],
                   "graph_breaks": sum(compiled["graph_breaks"].values())}
            result["steps"].append(row)
            result["compile_times"] = torch._dynamo.utils.compile_times(repr="str")
            log(f"step {row['step']}: {row['s']} s, {row['tokens']} tokens, {row['graphs']} graphs compiled")
            Path(args.out).write_text(json.dumps(result, indent=1))

    side.train(args.steps - 1, 1, callbacks=(StepTimer(),))  # the clock's own count: 1 untimed, the rest timed
    steady = [row["tokens"] / row["s"] for row in result["steps"][1:] if row["graphs"] == 0 and row["s"] > 0]
    pace = statistics.median(steady) if steady else None
    result["first_step_s"] = result["steps"][0]["s"]
    result["steady_tokens_per_s"] = round(pace) if pace else None
    result["compile_s_estimate"] = round(sum(max(0.0, row["s"] - row["tokens"] / pace) for row in result["steps"]),
                                         1) if pace else None
    Path(args.out).write_text(json.dumps(result, indent=1))
    return result


def checked_settings(args: argparse.Namespace) -> dict[str, Any]:
    """--setting as a side's settings (trial_speed's --variant form), refused before anything is
    built: too few steps, a pair that is not field=value, a field no training setting has."""
    if args.steps < 2:
        raise ValueError(f"--steps {args.steps}: at least 2 (a step after the compile is the baseline)")
    pairs = [item.split("=", 1) for item in args.setting.split(",")] if args.setting else []
    if any(len(pair) != 2 for pair in pairs):
        raise ValueError(f"--setting {args.setting!r}: expected field=value pairs, comma-separated")
    settings = {field: yaml.safe_load(value) for field, value in pairs}
    unknown = sorted(set(settings) - set(TrainingConfig.model_fields) - {"attention"})  # attention: ModelConfig's
    if unknown:
        raise ValueError(f"--setting: {', '.join(unknown)} is no training setting")
    return settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", choices=SHAPES, default="llama3.2-1b")
    parser.add_argument("--data", required=True, help="folder with train.jsonl and validation.jsonl")
    parser.add_argument("--tokenizer", required=True, help="a local tokenizer folder")
    parser.add_argument("--out", required=True, help="JSON file, rewritten after every step")
    parser.add_argument("--setting", default="", help="TrainingConfig fields, as trial_speed's --variant")
    parser.add_argument("--memory-budget-gb", type=float, help="the trial's memory share (default: the whole GPU)")
    parser.add_argument("--micro-batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--steps", type=int, default=5, help="steps, each timed alone")
    parser.add_argument("--trial-steps", type=int, default=1200, help="the trial's length the plan weighs")
    parser.add_argument("--train-examples", type=int, default=400)
    parser.add_argument("--model-cache", help="keep the random-weight model here and reuse it in a later run")
    args = parser.parse_args(argv)
    try:
        settings = checked_settings(args)
    except ValueError as error:
        print(f"compile_cost: {error}", file=sys.stderr)
        return 2
    # The Trainer's checkpoints (an 8B adapter's optimizer state is gigabytes) and, without
    # --model-cache, the random model go to a folder of their own, never beside --out, whose folder
    # a device run brings back whole.
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="compile_cost-") as folder:
        result = first_steps(args, settings, Path(folder))
    print(f"first step {result['first_step_s']} s; compile about {result['compile_s_estimate']} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
