"""What a sweep buys, and how soon: qlora-sweep against plain Ray Tune on the same GPU.

    python benchmarks/sweep_benchmark.py configs/smollm2_dialogsum_gpu.yaml --seeds 0 1 \
        --out benchmarks/results/sweep --plot docs/sweep_vs_plain_tune.png [--set KEY=VALUE ...]

For each seed (the searcher's and the training seed), in this order on one machine:
  (a) zero-shot: the base model, ROUGE on the whole validation set;
  (b) recipe: r=32, alpha=32, learning rate 2e-4, max_length 512, one trial with the sweep's
      budget (max_rungs x steps_per_rung steps), scored on the whole validation set;
  (c) plain Ray Tune: the same search space, number of trials, ASHA settings and seeds, with
      qlora-sweep's levers off: one GPU per trial, whole-set ROUGE at every rung, every trial
      tokenizing its own data, padded micro-batches, recompute on, generation 16 at a time;
  (c') plain script: benchmarks/plain_ray_tune.py, Ray Tune glued by hand with none of
      qlora-sweep's trial code, to show that (c) is not a strawman;
  (d) qlora-sweep: the config as given (gpus_per_trial auto, ROUGE budgeted by rung, ...).
For (c) and (d): best-so-far whole-set ROUGE-L against wall time since the sweep started, the
best, when it was first reached, when (d) first reached (c)'s best, and GPU-hours (wall time x
the cluster's GPUs). JSON into --out, the curves into --plot. `--analyze-only` re-reads
finished experiment folders under --out.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from search.config import load_config  # noqa: E402
from search.packing import TrialPlanner  # noqa: E402

RECIPE_VALUES = {"lora_r": 32, "lora_alpha": 32, "learning_rate": 2.0e-4, "max_length": 512}
RECIPE = ["search.lora_r={choice: [32]}", "search.lora_alpha={choice: [32]}",
          "search.learning_rate={choice: [2.0e-4]}", "search.max_length={choice: [512]}",
          "search.num_trials=1", "search.max_concurrent_trials=1", "evaluation.rung_examples=all"]
LEVERS_OFF = ["resources.gpus_per_trial=1", "evaluation.rung_examples=all", "data.reuse_tokenized=false",
              "training.padding_free=false", "training.gradient_checkpointing=true", "evaluation.batch_size=16"]


def rows_of(experiment: Path) -> list[dict[str, Any]]:
    rows = []
    for result in sorted(experiment.glob("*/result.json")):
        rows += [json.loads(line) for line in result.read_text().splitlines() if line.strip()]
    return rows


def curve(experiment: Path, metric: str = "rougeL") -> dict[str, Any]:
    """Best-so-far whole-validation-set metric against seconds since the sweep's first trial began."""
    rows = rows_of(experiment)
    if not rows:
        raise SystemExit(f"{experiment}: no results")
    first_rungs = [r for r in rows if r.get("training_iteration") == 1]
    start = (min(r["timestamp"] - r["time_total_s"] for r in first_rungs) if first_rungs
             else min(r["timestamp"] for r in rows))
    whole = max((r.get("rouge_examples") or 0) for r in rows)
    scored = sorted((r["timestamp"] - start, r[metric]) for r in rows
                    if (r.get("rouge_examples") or whole) >= whole and isinstance(r.get(metric), (int, float)))
    points, best = [], float("-inf")
    for seconds, value in scored:
        if value > best:
            best = value
            points.append((seconds, value))
    wall = max(r["timestamp"] for r in rows) - start
    return {"points": points, "best": best if points else None, "time_to_best_s": points[-1][0] if points else None,
            "wall_s": wall, "validation_examples": whole}


def time_to_reach(points: list[tuple[float, float]], target: float | None) -> float | None:
    if target is None:
        return None
    return next((seconds for seconds, value in points if value >= target), None)


def run_sweep(config: str, overrides: list[str], name: str, storage: Path) -> Path:
    """One arm through qlora-sweep's CLI."""
    return _run([sys.executable, "-m", "search", "run", config, "--set", f"name={name}", "--set", f"storage={storage}"],
                overrides, name, storage)


def run_plain_script(config: str, overrides: list[str], name: str, storage: Path) -> Path:
    """The Ray Tune-by-hand arm."""
    return _run([sys.executable, "benchmarks/plain_ray_tune.py", config, "--name", name, "--storage", str(storage)],
                overrides, name, storage)


def _run(command: list[str], overrides: list[str], name: str, storage: Path) -> Path:
    for override in overrides:
        command += ["--set", override]
    started = time.time()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{name} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    print(f"{name}: {time.time() - started:.0f} s", flush=True)
    return storage / name


def zero_shot(config: str, overrides: list[str]) -> dict[str, float]:
    """The base model without an adapter, scored as a trial with the recipe's max_length scores validation."""
    from trainables.data import load_dialogues
    from trainables.evaluation import RougeEvaluation
    from trainables.model import load_quantized_model
    from trainables.prompt import load_tokenizer

    trial = TrialPlanner.alone_on_this_machine(load_config(config, overrides)).trial_config(RECIPE_VALUES)
    tokenizer = load_tokenizer(trial.model)
    validation = load_dialogues(trial.data)["validation"]
    evaluation = RougeEvaluation.for_trial(trial, tokenizer)
    return evaluation.rouge(load_quantized_model(trial.model), evaluation.prompts(validation["dialogue"]),
                            list(validation["summary"]))


def gpus_in_cluster() -> int:
    try:
        import torch

        return torch.cuda.device_count()
    except ImportError:
        return 0


def summarize(out: Path, seed: int, gpus: int) -> dict[str, Any]:
    folder = out / f"seed{seed}"
    plain, ours = curve(folder / f"plain-tune-s{seed}"), curve(folder / f"qlora-sweep-s{seed}")
    script = curve(folder / f"plain-script-s{seed}")
    recipe = curve(folder / f"recipe-s{seed}")
    reach = time_to_reach(ours["points"], plain["best"])
    for entry in (plain, script, ours):
        entry["gpu_hours"] = entry["wall_s"] * gpus / 3600
    zero = json.loads((folder / "zero_shot.json").read_text()) if (folder / "zero_shot.json").is_file() else None
    return {
        "seed": seed,
        "zero_shot": zero,
        "recipe_rougeL": recipe["best"],
        "plain_tune": plain,
        "plain_script": script,
        "qlora_sweep": {**ours, "time_to_reach_plain_best_s": reach},
        "sooner_than_plain": plain["time_to_best_s"] / reach if reach else None,
    }


def plot(summaries: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4))
    for summary in summaries:
        for key, style, label in (("plain_script", ":", "Ray Tune by hand"), ("plain_tune", "--", "levers off"),
                                  ("qlora_sweep", "-", "qlora-sweep")):
            points = summary[key]["points"]
            if points:
                xs = [p[0] / 60 for p in points] + [summary[key]["wall_s"] / 60]
                ys = [p[1] for p in points] + [points[-1][1]]
                axes.step(xs, ys, style, where="post", label=f"{label}, seed {summary['seed']}")
    axes.set_xlabel("wall time since the sweep started (minutes)")
    axes.set_ylabel("best validation ROUGE-L so far")
    axes.legend(fontsize=8)
    axes.grid(alpha=0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--plot", type=Path, required=True)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--analyze-only", action="store_true")
    parser.add_argument("--gpus", type=int, help="GPUs in the cluster, for GPU-hours (default: this machine's)")
    args = parser.parse_args(argv)
    gpus = args.gpus if args.gpus is not None else gpus_in_cluster()
    load_config(args.config, args.overrides)  # a bad config fails here, before anything runs
    for seed in [] if args.analyze_only else args.seeds:
        folder = args.out.resolve() / f"seed{seed}"
        folder.mkdir(parents=True, exist_ok=True)
        seeded = args.overrides + [f"search.seed={seed}", f"training.seed={seed}"]
        (folder / "zero_shot.json").write_text(json.dumps(zero_shot(args.config, seeded), indent=2))
        run_sweep(args.config, seeded + RECIPE, f"recipe-s{seed}", folder)
        run_sweep(args.config, seeded + LEVERS_OFF, f"plain-tune-s{seed}", folder)
        run_plain_script(args.config, seeded, f"plain-script-s{seed}", folder)
        run_sweep(args.config, seeded, f"qlora-sweep-s{seed}", folder)
    summaries = [summarize(args.out, seed, gpus) for seed in args.seeds]
    (args.out / "summary.json").write_text(json.dumps(summaries, indent=2))
    plot(summaries, args.plot)
    for s in summaries:
        print(f"seed {s['seed']}: zero-shot ROUGE-L {s['zero_shot'] and s['zero_shot']['rougeL']}, "
              f"recipe {s['recipe_rougeL']}, plain Tune best {s['plain_tune']['best']} at "
              f"{s['plain_tune']['time_to_best_s']} s, qlora-sweep best {s['qlora_sweep']['best']}, reached plain's "
              f"best at {s['qlora_sweep']['time_to_reach_plain_best_s']} s ({s['sooner_than_plain']}x sooner)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
