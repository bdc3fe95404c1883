"""How long one run's trials took against another run's, trial by trial: each rung's time and training
speed as a ratio, over the trials both runs trained with the same values.

    python benchmarks/rung_times.py FIRST_EXPERIMENT LATER_EXPERIMENT [--json OUT]

An experiment is an arm's folder of Tune trials (each with params.json and result.json), as the
sweep benchmark leaves it (seedN/qlora-sweep-sN, seedN/plain-script-sN). The same seed proposes the
same trials in every run, so two runs of one arm pair up by their values, and each pair trained the
same work: what differs is the machine's state and the trials running beside them. Printed per rung:
the median ratio (first over later) of its seconds and of its tokens/s, their range, and the pairs.
A first run of a job on a fresh machine against a later one says what the first run paid. Where the
rows carry the parts of a rung, as qlora-sweep's trials report them (by hand's do not), rung 1's parts
follow: first minus later in seconds, the median over the pairs, apart for trials that started in a
fresh worker and in a kept one (warm_start) in both runs: where the first run's extra time went.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from sweep_benchmark import trials_by_hyperparameters  # beside this script: trials keyed as the arms pair them

# rung 1's parts as a qlora-sweep trial reports them (trainables/report.py), and how a line names them
PARTS = {"time_this_iter_s": "whole rung", "startup_s": "startup", "startup_imports_s": "imports",
         "startup_data_s": "data", "startup_model_s": "model", "train_s": "train", "step_s_first": "first step",
         "step_s_median": "median step", "eval_s": "eval"}


def first_rung_parts(a: dict[tuple, dict[int, dict[str, Any]]], b: dict[tuple, dict[int, dict[str, Any]]]
                     ) -> dict[str, dict[str, Any]]:
    """Rung 1's parts, first minus later (median seconds over the pairs), for the trials that started in a
    fresh worker in both runs and for those that started in a kept one; empty where the rows have no parts."""
    parts: dict[str, dict[str, Any]] = {}
    for worker, warm in (("fresh", False), ("kept", True)):
        pairs = [(a[key][1], b[key][1]) for key in a.keys() & b.keys() if 1 in a[key] and 1 in b[key]
                 and a[key][1].get("warm_start") is warm and b[key][1].get("warm_start") is warm]
        medians = {part: round(statistics.median(x[part] - y[part] for x, y in pairs), 2) for part in PARTS
                   if pairs and all(x.get(part) is not None and y.get(part) is not None for x, y in pairs)}
        if medians:
            parts[worker] = {"trials": len(pairs), "first_minus_later_s": medians}
    return parts


def compare(first: Path, later: Path) -> dict[str, Any]:
    """Per rung, over the trials both ran to it: first/later ratios of seconds and of tokens/s."""
    # a diverged rung is kept: what it trained took the machine's time like any other
    a, b = (trials_by_hyperparameters(run, diverged=True) for run in (first, later))
    ratios: dict[int, dict[str, list[float]]] = {}
    for key in a.keys() & b.keys():
        for rung in a[key].keys() & b[key].keys():
            by = ratios.setdefault(rung, {"seconds": [], "tokens_per_s": []})
            for measure, column in (("seconds", "time_this_iter_s"), ("tokens_per_s", "tokens_per_s")):
                by[measure].append(a[key][rung][column] / b[key][rung][column])
    return {"first": str(first), "later": str(later), "pairs": len(a.keys() & b.keys()),
            "rung1_parts": first_rung_parts(a, b),
            "rungs": {str(rung): {measure: {"median": round(statistics.median(v), 3), "min": round(min(v), 3),
                                            "max": round(max(v), 3), "trials": len(v)}
                                  for measure, v in by.items()}
                      for rung, by in sorted(ratios.items())}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("first", type=Path)
    parser.add_argument("later", type=Path)
    parser.add_argument("--json", type=Path, help="write the comparison here too")
    args = parser.parse_args(argv)
    for folder in (args.first, args.later):
        if not any(folder.glob("*/params.json")):
            print(f"rung_times: {folder}: no trials (*/params.json) there", file=sys.stderr)
            return 2
    result = compare(args.first, args.later)
    if not result["rungs"]:
        print(f"rung_times: the two runs share no trial values: {args.first}, {args.later}", file=sys.stderr)
        return 2
    for rung, by in result["rungs"].items():
        seconds, speed = by["seconds"], by["tokens_per_s"]
        print(f"rung {rung}: time {seconds['median']:.2f}x ({seconds['min']:.2f}-{seconds['max']:.2f}), "
              f"tokens/s {speed['median']:.2f}x ({speed['min']:.2f}-{speed['max']:.2f}), {seconds['trials']} trials")
    for worker, by in result["rung1_parts"].items():
        print(f"rung 1's parts, {by['trials']} trials in {worker} workers, first minus later (median s): "
              + ", ".join(f"{PARTS[part]} {seconds:+.2f}" for part, seconds in by["first_minus_later_s"].items()))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
