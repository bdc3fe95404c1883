"""One setting's qlora-sweep runs against earlier runs of the same search, trial values by trial values.

    python benchmarks/across_runs.py --candidate RUN [RUN ...] --baseline RUN [RUN ...] [--out FILE]

RUN: a qlora-sweep arm's experiment folder (e.g. benchmarks/results/2026-12-04-sweep-500/seed0/qlora-sweep-s0).
A seeded searcher proposes the same first trials in every run of one space, so the same values meet again at
the same rung across runs. One run's difference from another is a draw of training's spread (the same values
scored 0.002-0.006 ROUGE-L apart on 500 dialogues between runs of one code); many earlier runs of the baseline
give that spread for each pair, against which a candidate setting's rung scores are read: above the highest of
the baseline's, below its lowest, or inside. Also each run's best on the whole validation set.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sweep_benchmark import curve, trials_by_hyperparameters  # noqa: E402

METRICS = ("rougeL", "train_loss")


def spread(values: list[float]) -> dict[str, Any]:
    return {"mean": statistics.mean(values), "min": min(values), "max": max(values), "runs": len(values)}


def compared_by_values(candidates: list[Path], baselines: list[Path]) -> dict[str, Any]:
    """Per rung, every (candidate run, values) whose rung some baseline run also reported: the candidate's
    metric against the baseline runs' mean, lowest and highest for those values at that rung. A rung scored on
    fewer dialogues than another run's of the same values is left out (a subset's ROUGE is another measure)."""
    baseline_trials = [trials_by_hyperparameters(run) for run in baselines]
    pairs = []
    for run in candidates:
        for key, rungs in trials_by_hyperparameters(run).items():
            for rung, row in rungs.items():
                theirs = [b[key][rung] for b in baseline_trials if rung in b.get(key, {})
                          and b[key][rung].get("rouge_examples") == row.get("rouge_examples")]
                if not theirs:
                    continue
                pair = {"run": str(run), "hyperparameters": dict(key), "rung": rung,
                        "rouge_examples": row.get("rouge_examples")}
                for metric in METRICS:
                    values = [t[metric] for t in theirs if isinstance(t.get(metric), (int, float))]
                    if isinstance(row.get(metric), (int, float)) and values:
                        pair[metric] = {"candidate": row[metric], "baseline": spread(values),
                                        "minus_baseline_mean": row[metric] - statistics.mean(values)}
                pairs.append(pair)
    by_rung = {}
    for rung in sorted({p["rung"] for p in pairs}):
        group = [p for p in pairs if p["rung"] == rung]
        summary: dict[str, Any] = {"pairs": len(group)}
        for metric in METRICS:
            scored = [p[metric] for p in group if metric in p]
            if not scored:
                continue
            gaps = [s["minus_baseline_mean"] for s in scored]
            summary[metric] = {
                "mean_minus_baseline_mean": statistics.mean(gaps),
                "above_baseline_mean": sum(g > 0 for g in gaps), "below_baseline_mean": sum(g < 0 for g in gaps),
                "above_every_baseline_run": sum(s["candidate"] > s["baseline"]["max"] for s in scored),
                "below_every_baseline_run": sum(s["candidate"] < s["baseline"]["min"] for s in scored),
                "baseline_runs_a_pair": sorted({s["baseline"]["runs"] for s in scored}),
            }
        by_rung[str(rung)] = summary
    return {"by_rung": by_rung, "pairs": pairs}


def bests(runs: list[Path]) -> dict[str, Any]:
    """Each run's best on the whole validation set and when it came; with their spread."""
    each = []
    for run in runs:
        c = curve(run)
        each.append({"run": str(run), "best": c["best"], "time_to_best_s": c["time_to_best_s"], "wall_s": c["wall_s"]})
    scored = [e["best"] for e in each if e["best"] is not None]
    return {"runs": each, "spread": spread(scored) if scored else None}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--candidate", nargs="+", type=Path, required=True)
    parser.add_argument("--baseline", nargs="+", type=Path, required=True)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    for run in args.candidate + args.baseline:
        if not any(run.glob("*/result.json")):
            parser.error(f"{run}: no trial results there (a qlora-sweep arm's experiment folder holds */result.json)")
    result = {"candidate": bests(args.candidate), "baseline": bests(args.baseline),
              **compared_by_values(args.candidate, args.baseline)}
    text = json.dumps(result, indent=1)
    if args.out:
        args.out.write_text(text + "\n")
    for rung, summary in result["by_rung"].items():
        line = f"rung {rung}: {summary['pairs']} pairs"
        for metric in METRICS:
            if metric in summary:
                s = summary[metric]
                line += (f"; {metric} {s['mean_minus_baseline_mean']:+.4f} against the baseline's mean "
                         f"({s['above_baseline_mean']} above, {s['below_baseline_mean']} below; "
                         f"{s['above_every_baseline_run']} above every baseline run, "
                         f"{s['below_every_baseline_run']} below every one)")
        print(line)
    for side in ("candidate", "baseline"):
        s = result[side]["spread"]
        if s:
            print(f"{side} bests: mean {s['mean']:.4f}, {s['min']:.4f}-{s['max']:.4f} over {s['runs']} runs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
