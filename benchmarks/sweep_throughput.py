"""Aggregate training throughput of a finished sweep, from its experiment folder.

    python benchmarks/sweep_throughput.py EXPERIMENT [EXPERIMENT ...] [--json OUT]

Per trial: where it ran (Ray node id, GPU ids), real training tokens, its training-only tokens/s
and its wall span. Per sweep: total training tokens over the wall time from the first trial's
start to the last trial's end (aggregate tokens/s), and the mean per-trial training tokens/s.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def summarize(experiment: Path) -> dict:
    trials = []
    for trial in sorted(p for p in experiment.iterdir() if (p / "result.json").is_file()):
        rows = [json.loads(line) for line in (trial / "result.json").read_text().splitlines() if line.strip()]
        if not rows:
            continue
        start = rows[0]["timestamp"] - rows[0]["time_total_s"]
        trials.append({
            "trial_id": rows[0]["trial_id"],
            "node_id": rows[-1].get("node_id", ""),
            "gpu_ids": sorted({r.get("gpu_ids", "") for r in rows}),
            "rungs": len(rows),
            "tokens": rows[-1]["tokens_seen"],
            "train_tokens_per_s": sum(r["tokens_per_s"] for r in rows) / len(rows),
            "start": start,
            "end": rows[-1]["timestamp"],
            "peak_memory_gb": max(r["peak_memory_gb"] for r in rows),
        })
    if not trials:
        raise SystemExit(f"{experiment}: no trial results")
    wall = max(t["end"] for t in trials) - min(t["start"] for t in trials)
    tokens = sum(t["tokens"] for t in trials)
    return {
        "experiment": str(experiment),
        "trials": trials,
        "wall_s": wall,
        "total_tokens": tokens,
        "aggregate_tokens_per_s": tokens / wall if wall else 0.0,
        "mean_trial_train_tokens_per_s": sum(t["train_tokens_per_s"] for t in trials) / len(trials),
        "gpus_used": sorted({g for t in trials for g in t["gpu_ids"] if g}),
        "nodes_used": sorted({t["node_id"] for t in trials}),
        "per_gpu": per_gpu(trials, wall),
    }


def per_gpu(trials: list[dict], wall: float) -> dict[str, dict]:
    """Training tokens each physical GPU (node, GPU id) processed over the sweep's wall time, and
    how many trials shared it: what packing several trials onto one GPU achieves."""
    gpus: dict[str, dict] = {}
    for t in trials:
        for gpu in t["gpu_ids"] or [""]:
            if not gpu:
                continue
            key = f"{t['node_id'][:8]}/gpu{gpu}"
            entry = gpus.setdefault(key, {"trials": 0, "tokens": 0})
            entry["trials"] += 1
            entry["tokens"] += t["tokens"] / len(t["gpu_ids"])  # a multi-GPU trial's tokens split evenly
    for entry in gpus.values():
        entry["aggregate_tokens_per_s"] = entry["tokens"] / wall if wall else 0.0
    return gpus


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("experiments", nargs="+", type=Path)
    parser.add_argument("--json", type=Path, help="write the summaries here")
    args = parser.parse_args()
    summaries = [summarize(e) for e in args.experiments]
    for s in summaries:
        print(f"{s['experiment']}: {len(s['trials'])} trials on GPUs {s['gpus_used'] or 'none'}, "
              f"{s['total_tokens']} tokens in {s['wall_s']:.0f} s = {s['aggregate_tokens_per_s']:.0f} tokens/s aggregate; "
              f"mean per-trial training {s['mean_trial_train_tokens_per_s']:.0f} tokens/s")
        for gpu, g in s["per_gpu"].items():
            print(f"  {gpu}: {g['trials']} trials, {g['aggregate_tokens_per_s']:.0f} tokens/s aggregate")
        for t in s["trials"]:
            print(f"  {t['trial_id']} gpu {','.join(t['gpu_ids']) or '-'} node {t['node_id'][:8]} rungs {t['rungs']} "
                  f"tokens {t['tokens']} train {t['train_tokens_per_s']:.0f} tok/s peak {t['peak_memory_gb']:.1f} GB")
    if args.json:
        args.json.write_text(json.dumps(summaries, indent=2))


if __name__ == "__main__":
    main()
