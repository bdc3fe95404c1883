"""Whether trials of the same hyperparameters and seed train the same, to the last digit, when they
share a GPU: a sweep whose every trial has the same values, run as a user runs it (`qlora-sweep run`),
N trials at a time, and each rung's losses compared across its trials and across runs.

On one H200 the sweep benchmark's qlora-sweep arm, run again with the same seed, gave trials of the
same values rung-1 training losses that differed in the fourth to sixth digit, while trials run one
after another in one worker repeated to the last digit (benchmarks/first_rung.py's A/Bs since
2026-12-04) and the recipe's lone trial did too (benchmarks/results/2026-12-05-recipe-rerun). This
asks which part of sharing does it, one group of settings at a time:

    python benchmarks/shared_determinism.py configs/sweep_benchmark_gpu.yaml --out determinism.json \
        --group shared:6 --group alone:1 --group shared-eager:6:training.compile_layers=false --runs 2 \
        --set data.path=DIALOGSUM --set model.name_or_path=MODEL --set scheduler.max_rungs=2

A group is NAME:AT_ONCE[:KEY=VALUE,...]: the trials at a time, and settings of its own beside --set.
Runs go group by group in turn (A B C A B C), each into a sweep of its own; no trial is stopped early
(the grace period is every rung). Per group and rung: how many distinct values of the first step's
loss (the untouched base model's forward), the rung's mean training loss and the validation loss its
trials got, within each run and over all its runs, and the widest spread; `identical` when there is
one value everywhere; and the median training pace (tokens/s) of its trials' later rungs, what the
group's settings cost: each run's median, and each later group's over the first group's round by round
(`pace_against_first_group`: the by-turns ratio, with its median and range). The JSON is rewritten after
every run, so a chain cut short keeps what ran.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT)]
from search.config import load_config  # noqa: E402 - light: pydantic and yaml, no torch
from sweep_benchmark import RECIPE, warm_up_gpu  # noqa: E402 - the recipe arm's values, and its warm-up
from trainables.errors import ConfigError  # noqa: E402

COMPARED = ("first_step_loss", "train_loss", "eval_loss")
# every trial the recipe's values (r 32, alpha 32, lr 2e-4, 512 tokens), each a choice of one
VALUES = [setting for setting in RECIPE if setting.split("=")[0] in (
    "search.lora_r", "search.lora_alpha", "search.lora_alpha_ratio", "search.learning_rate", "search.max_length")]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    problem = check_arguments(args)
    if problem:
        print(f"shared_determinism.py: {problem}", file=sys.stderr)
        return 2
    groups = [parse_group(text) for text in args.group]
    runs_folder = args.out.with_name(args.out.stem + "-runs")
    runs_folder.mkdir(parents=True, exist_ok=True)
    warm_up_gpu(args.warmup_s)
    result = {"command": sys.argv, "config": str(args.config), "values": VALUES, "trials": args.trials,
              "sets": args.set, "groups": {name: {"at_once": at_once, "settings": settings, "runs": []}
                                           for name, at_once, settings in groups}}
    for run in range(1, args.runs + 1):
        for name, at_once, settings in groups:
            experiment = f"{name}-r{run}"
            began = time.perf_counter()
            done = subprocess.run(
                [sys.executable, "-m", "search", "run", str(args.config),
                 *sweep_sets(args, runs_folder, experiment, at_once, settings)],
                cwd=ROOT, capture_output=True, text=True)
            (runs_folder / f"{experiment}.log").write_text(done.stdout + done.stderr)
            if done.returncode != 0:
                print(f"shared_determinism.py: {experiment}: qlora-sweep run failed (exit {done.returncode}); its "
                      f"output is in {runs_folder / (experiment + '.log')}", file=sys.stderr)
                return 1
            trials = trial_rungs(runs_folder / experiment)
            result["groups"][name]["runs"].append({"run": run, "wall_s": round(time.perf_counter() - began, 1),
                                                   "trials": trials})
            result["groups"][name]["compared"] = compare([r["trials"] for r in result["groups"][name]["runs"]])
            result["pace_against_first_group"] = pace_against_first(result["groups"])
            args.out.write_text(json.dumps(result, indent=2) + "\n")
            print(f"{experiment}: {describe(result['groups'][name]['compared'])}", file=sys.stderr)
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", type=Path, help="the sweep config; every trial gets the recipe's values")
    parser.add_argument("--out", type=Path, required=True, help="the JSON to write; the sweeps go beside it")
    parser.add_argument("--group", action="append", default=[],
                        help="NAME:AT_ONCE[:KEY=VALUE,...], repeatable (default: shared:TRIALS)")
    parser.add_argument("--trials", type=int, default=6, help="trials in each sweep, all of the same values")
    parser.add_argument("--runs", type=int, default=1, help="sweeps of each group, the groups in turn")
    parser.add_argument("--set", action="append", default=[], help="KEY=VALUE for every sweep, as `run --set`")
    parser.add_argument("--warmup-s", type=float, default=0, help="untimed GPU load first (none on a CPU)")
    args = parser.parse_args(argv)
    args.group = args.group or [f"shared:{args.trials}"]
    return args


def check_arguments(args: argparse.Namespace) -> str | None:
    if not args.config.is_file():
        return f"{args.config} does not exist"
    if not args.out.parent.is_dir():
        return f"--out: no folder {args.out.parent}"
    if args.trials < 2 or args.runs < 1:
        return "--trials must be 2 or more (they are compared with each other) and --runs 1 or more"
    if any("=" not in pair for pair in args.set):
        return f"--set {next(pair for pair in args.set if '=' not in pair)}: not KEY=VALUE"
    names = set()
    for text in args.group:
        try:
            name, at_once, settings = parse_group(text)
            load_config(args.config, [*args.set, *VALUES, *settings])  # the group's config, as `run` will read it
        except ValueError as error:
            return f"--group {text}: {error}"
        except ConfigError as error:
            return str(error)
        if not 1 <= at_once <= args.trials:
            return f"--group {text}: trials at a time must be 1 to --trials ({args.trials})"
        if name in names:
            return "--group: two groups of the same name"
        names.add(name)
    return None


def parse_group(text: str) -> tuple[str, int, list[str]]:
    """NAME:AT_ONCE[:KEY=VALUE,...] as (name, trials at a time, its settings as `--set` values)."""
    parts = text.split(":", 2)
    if len(parts) < 2 or not parts[0] or not parts[1].isdigit():
        raise ValueError("expected NAME:AT_ONCE[:KEY=VALUE,...]")
    settings = [pair for pair in parts[2].split(",") if pair] if len(parts) == 3 else []
    if any("=" not in pair for pair in settings):
        raise ValueError("its settings must be KEY=VALUE,...")
    return parts[0], int(parts[1]), settings


def sweep_sets(args: argparse.Namespace, storage: Path, name: str, at_once: int, settings: list[str]) -> list[str]:
    """`run`'s --set arguments: every trial the same values (a choice of one), none stopped early."""
    max_rungs = load_config(args.config, [*args.set, *VALUES, *settings]).scheduler.max_rungs
    sets = [*args.set, f"storage={storage}", f"name={name}", f"search.num_trials={args.trials}",
            f"search.max_concurrent_trials={at_once}", f"scheduler.grace_period={max_rungs}", *VALUES, *settings]
    return [word for pair in sets for word in ("--set", pair)]


def trial_rungs(experiment: Path) -> list[dict]:
    """Each trial's rungs: the compared losses, and whether its worker was a kept one."""
    trials = []
    for folder in sorted(p for p in experiment.iterdir() if (p / "result.json").is_file()):
        rows = [json.loads(line) for line in (folder / "result.json").read_text().splitlines() if line.strip()]
        trials.append({"trial": rows[0]["trial_id"] if rows else folder.name,
                       "config": rows[0]["config"] if rows else {},
                       "rungs": [{"rung": row["rung"], "warm_start": row.get("warm_start", False),
                                  "tokens_per_s": row.get("tokens_per_s"),
                                  **{key: row.get(key) for key in COMPARED}} for row in rows]})
    return trials


def compare(runs: list[list[dict]]) -> dict:
    """Per rung and loss: distinct values within each run (their largest count) and over all runs, and the
    widest spread over all; `identical` when every rung's every loss has one value everywhere."""
    by_rung: dict = {}
    for run_index, trials in enumerate(runs):
        for trial in trials:
            for rung in trial["rungs"]:
                for key in (key for key in COMPARED if rung.get(key) is not None):
                    values = by_rung.setdefault(rung["rung"], {}).setdefault(key, {})
                    values.setdefault(run_index, []).append(rung[key])
    rungs = {str(rung): {key: _values_taken(per_run) for key, per_run in losses.items()}
             for rung, losses in sorted(by_rung.items())}
    identical = bool(rungs) and all(loss["distinct_over_runs"] == 1
                                    for rung in rungs.values() for loss in rung.values())
    # what the group's settings cost: a trial's training pace at its later rungs (the first holds compiles)
    later = [[rung["tokens_per_s"] for trial in trials for rung in trial["rungs"]
              if rung["rung"] > 1 and rung.get("tokens_per_s")] for trials in runs]
    every = [pace for run in later for pace in run]
    return {"identical": identical, "runs": len(runs), "rungs": rungs,
            "later_rung_tokens_per_s_median": statistics.median(every) if every else None,
            "later_rung_tokens_per_s_by_run": [statistics.median(run) if run else None for run in later]}


def pace_against_first(groups: dict) -> dict:
    """Each later group's later-rung pace over the first group's, round by round (the groups' sweeps of a
    round run one after the other, so a round's ratio is the by-turns figure): each round's, their median,
    least and most. Rounds where either side has no pace are left out."""
    (first, *others) = [(name, group.get("compared", {}).get("later_rung_tokens_per_s_by_run", []))
                        for name, group in groups.items()]
    ratios = {}
    for name, paces in others:
        rounds = [mine / theirs for mine, theirs in zip(paces, first[1]) if mine and theirs]
        ratios[name] = {"against": first[0], "rounds": rounds,
                        "median": statistics.median(rounds) if rounds else None,
                        "min": min(rounds, default=None), "max": max(rounds, default=None)}
    return ratios


def _values_taken(per_run: dict[int, list[float]]) -> dict:
    """One loss of one rung: its distinct values in the run with most, over all runs, and their spread."""
    every = [value for values in per_run.values() for value in values]
    return {"distinct_in_a_run": max(len(set(values)) for values in per_run.values()),
            "distinct_over_runs": len(set(every)), "spread": max(every) - min(every), "trials": len(every)}


def describe(compared: dict) -> str:
    if compared["identical"]:
        return f"every trial the same to the last digit ({compared['runs']} run(s))"
    worst = max(((rung, key, loss) for rung, losses in compared["rungs"].items() for key, loss in losses.items()),
                key=lambda item: item[2]["spread"])
    rung, key, loss = worst
    return (f"trials differ: rung {rung}'s {key} took {loss['distinct_over_runs']} values over "
            f"{compared['runs']} run(s), spread {loss['spread']:.3g}")


if __name__ == "__main__":
    sys.exit(main())
