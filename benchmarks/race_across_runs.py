"""Issue 11's race to by hand's best, read over many runs of both arms of one seed instead of one of each.

    python benchmarks/race_across_runs.py --ours RUN [RUN ...] --plain RUN [RUN ...] [--target 3] [--test-target 3]
        [--out FILE]

RUN: an arm's experiment folder (e.g. benchmarks/results/2026-12-04-sweep-500/seed1/qlora-sweep-s1, or its
plain-script-s1 for --plain). One summary.json's `sooner_than_plain` pairs one qlora-sweep run with one by-hand run:
by hand's time to its best over the sweep's time to reach that score, undefined where the sweep never reaches it.
Both bests are draws of training's run-to-run spread (the same values scored 0.002-0.006 ROUGE-L apart on 500
dialogues between runs of one code), so one pair says little. Here every qlora-sweep run meets every by-hand run:
for each by-hand run, how many sweep runs reach its best and how many do so --target times sooner or more; over all
pairs, the share at the target and the median, a pair that never reached counted below every figure. Beside it,
the issue's other target for each sweep run: its best adapter's test ROUGE-L over the recipe's, in points, from the
test_scores.json beside the run (sweep_benchmark.py writes both arms' there), and how many runs reach --test-target.
Times are each arm's own, from its first trial's start: compare runs of one kind of GPU.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sweep_benchmark import curve, time_to_reach  # noqa: E402


def test_over_recipe(run: Path) -> float | None:
    """The run's best adapter's test ROUGE-L minus the recipe's, in points (x100), from the seed's test_scores.json
    beside it; None where either score is missing."""
    scores = run.parent / "test_scores.json"
    if not scores.is_file():
        return None
    tests = json.loads(scores.read_text())
    ours, recipe = tests.get("qlora_sweep", {}).get("rougeL"), tests.get("recipe", {}).get("rougeL")
    return 100 * (ours - recipe) if ours is not None and recipe is not None else None


def race(curves: dict[Path, dict[str, Any]], ours: list[Path], plain: list[Path], target: float,
         test_target: float = 3.0) -> dict[str, Any]:
    """`curves`: every run's sweep_benchmark.curve, read once (main checks them first)."""
    our_curves = [(run, curves[run]) for run in ours]
    by_plain_run, all_sooner = [], []
    for run in plain:
        theirs = curves[run]
        sooner = []
        for _, mine in our_curves:
            reach = time_to_reach(mine["points"], theirs["best"])
            sooner.append(theirs["time_to_best_s"] / reach if reach else None)
        all_sooner += sooner
        by_plain_run.append({"run": str(run), "best": theirs["best"], "time_to_best_s": theirs["time_to_best_s"],
                             "sooner_than_plain": sooner, "reached": sum(s is not None for s in sooner),
                             "at_target": sum(s is not None and s >= target for s in sooner)})
    # a pair that never reached sorts below every figure; the median is a pair's own (median_low), so it says
    # "never" where at least half the pairs never reached
    median = statistics.median_low([s if s is not None else -1.0 for s in all_sooner])
    tests = [test_over_recipe(run) for run, _ in our_curves]
    scored = [t for t in tests if t is not None]
    return {
        "target": target,
        "ours": [{"run": str(run), "best": c["best"], "time_to_best_s": c["time_to_best_s"], "test_over_recipe": t}
                 for (run, c), t in zip(our_curves, tests)],
        "test_over_recipe": {"target": test_target, "runs": len(scored),
                             "mean": statistics.mean(scored) if scored else None,
                             "at_target": sum(t >= test_target for t in scored)},
        "plain": by_plain_run,
        "pairs": len(all_sooner),
        "reached": sum(s is not None for s in all_sooner),
        "at_target": sum(s is not None and s >= target for s in all_sooner),
        "median_sooner_than_plain": median if median >= 0 else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ours", nargs="+", type=Path, required=True, help="qlora-sweep arms' experiment folders")
    parser.add_argument("--plain", nargs="+", type=Path, required=True, help="by-hand arms' experiment folders")
    parser.add_argument("--target", type=float, default=3.0, help="the factor sooner asked for (issue 11: 3)")
    parser.add_argument("--test-target", type=float, default=3.0,
                        help="test ROUGE-L points over the recipe's asked for (issue 11: 3)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if args.target <= 0:
        parser.error(f"--target {args.target}: must be above 0")
    for run in args.ours + args.plain:
        if not any(run.glob("*/result.json")):
            parser.error(f"{run}: no trial results there (an arm's experiment folder holds */result.json)")
    # a run's best is its best on the most dialogues any of its rungs scored: a run cut before its last rung (on the
    # whole validation set) would race with a subset's score, and one whose every rung diverged has none
    scored = {run: curve(run) for run in args.ours + args.plain}
    for run, c in scored.items():
        if c["best"] is None:
            parser.error(f"{run}: no rung scored ROUGE-L on its validation dialogues (every one diverged?)")
    most = max(c["validation_examples"] for c in scored.values())
    for run, c in scored.items():
        if c["validation_examples"] < most:
            parser.error(f"{run}: its best rung scored {c['validation_examples']} validation dialogues, other runs "
                         f"{most}: a run cut before its last rung?")
    result = race(scored, args.ours, args.plain, args.target, args.test_target)
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    bests = [o["best"] for o in result["ours"]]
    print(f"qlora-sweep: {len(bests)} runs, bests {min(bests):.4f}-{max(bests):.4f} "
          f"(mean {statistics.mean(bests):.4f})")
    for p in result["plain"]:
        figures = ", ".join(f"{s:.2f}x" if s is not None else "never" for s in p["sooner_than_plain"])
        print(f"by hand {p['run']}: best {p['best']:.4f} at {p['time_to_best_s']:.0f} s; reached in {p['reached']} "
              f"of {len(bests)} runs, {args.target:g}x sooner or more in {p['at_target']} ({figures})")
    median = result["median_sooner_than_plain"]
    print(f"all {result['pairs']} pairs: {result['at_target']} at {args.target:g}x or more, {result['reached']} "
          f"reached; median " + (f"{median:.2f}x" if median is not None else "never"))
    test = result["test_over_recipe"]
    if test["runs"]:
        print(f"test over the recipe: mean {test['mean']:+.2f} points over {test['runs']} runs, {test['at_target']} at "
              f"+{args.test_target:g} or more")
    return 0


if __name__ == "__main__":
    sys.exit(main())
