"""A test-sized sweep's wall time from `qlora-sweep run` to its exit, this checkout against another
one, by turns: what each test sweep of the suite pays in fixed costs (driver checks, Ray's start
and stop, a worker's imports) around a second of training.

    git worktree add /tmp/baseline <rev>
    python tests/tiny_model.py /tmp/tiny
    python benchmarks/tiny_sweep_time.py --model /tmp/tiny --baseline /tmp/baseline --rounds 6 --out times.json

One trial, one rung of 2 steps on the tiny model and the shipped sample (tests/conftest.py's tiny
sweep). Each round runs the baseline, then this checkout; the summary gives each side's times, median
and min-max. --baseline-drop KEY: a resources key the baseline's config schema does not know yet.
--baseline-python PYTHON: the baseline's interpreter, its own environment (default: this one), to
time an install against another; e.g. with the same checkout twice, a .venv whose packages were
byte-compiled at install against one whose were not:

    python benchmarks/tiny_sweep_time.py --model /tmp/tiny --baseline /tmp/other-clone \
        --baseline-python /tmp/other-clone/.venv/bin/python --rounds 3 --out times.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import tiny_sweep_dict  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a tiny model folder (python tests/tiny_model.py DIR)")
    parser.add_argument("--baseline", required=True, help="another checkout of this repository")
    parser.add_argument("--baseline-drop", action="append", default=[], metavar="KEY",
                        help="a resources key to leave out of the baseline's config")
    parser.add_argument("--baseline-python", default=sys.executable,
                        help="the interpreter the baseline runs with (default: this one)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    if not (Path(args.baseline) / "search" / "cli.py").is_file():
        print(f"tiny_sweep_time: --baseline {args.baseline}: not a checkout of this repository", file=sys.stderr)
        return 2
    if not os.access(args.baseline_python, os.X_OK):
        print(f"tiny_sweep_time: --baseline-python {args.baseline_python}: not an executable", file=sys.stderr)
        return 2
    sides = {"baseline": Path(args.baseline), "this": ROOT}
    pythons = {"baseline": args.baseline_python, "this": sys.executable}
    times: dict[str, list[float]] = {side: [] for side in sides}
    with tempfile.TemporaryDirectory(prefix="tiny-sweep-time-") as scratch:
        for round_number in range(args.rounds):
            for side, checkout in sides.items():
                config = tiny_sweep_dict(Path(args.model), Path(scratch) / "results", name=f"{side}-{round_number}",
                                         search={"num_trials": 1}, scheduler={"max_rungs": 1, "grace_period": 1})
                if side == "baseline":
                    for key in args.baseline_drop:
                        config["resources"].pop(key, None)
                path = Path(scratch) / f"{side}.yaml"
                path.write_text(yaml.safe_dump(config))
                started = time.perf_counter()
                done = subprocess.run([pythons[side], "-m", "search", "run", str(path)], cwd=checkout,
                                      capture_output=True, text=True, env={**os.environ, "RAY_ADDRESS": "local"})
                if done.returncode != 0:
                    print(f"tiny_sweep_time: {side}'s sweep failed:\n{done.stderr[-2000:]}", file=sys.stderr)
                    return 1
                times[side].append(round(time.perf_counter() - started, 1))
                print(f"round {round_number + 1} {side}: {times[side][-1]} s", file=sys.stderr, flush=True)
    result = {"date": time.strftime("%Y-%m-%d"), "command": " ".join(sys.argv), "rounds": args.rounds,
              "pythons": pythons, "PYTHONDONTWRITEBYTECODE": os.environ.get("PYTHONDONTWRITEBYTECODE"),
              "sides": {side: {"seconds": values, "median": statistics.median(values), "min": min(values),
                               "max": max(values)} for side, values in times.items()}}
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(json.dumps(result["sides"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
