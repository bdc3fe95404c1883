"""Where a fresh trial worker's start goes before its first step, and whether the CUDA context can be made
beside the imports instead of inside them: fresh processes, one at a time, the sides by turns.

    python benchmarks/worker_start.py --rounds 3 --out worker_start.json --importtime importtime.txt

A fresh worker imports trainables.trial (search/tuner.py's run_trial) before it can plan or load
anything; on the H200's machine that took 17-21 s (benchmarks/results/2026-12-03-import-probe), on the 2-core
CPU 7-9 s, and the CUDA context is made somewhere in it (bitsandbytes asks torch about the GPUs on import).
First run (2026-12-05-worker-start-loss-sweep): the imports 23.3 s, the same with the GPUs hidden, the context
0.14 s, and no gain from making it beside them: the libraries' own imports are the cost.
Each side is one fresh process that ends once the trial's modules are imported and a CUDA tensor exists
(`ready_s`; on a machine without CUDA, once the imports are done):
  as_now         import trainables.trial, then a CUDA tensor: what a worker does now;
  context_ahead  import torch, then a thread makes the CUDA context (a tensor) while the main thread
                 imports trainables.trial: what a worker could do, if torch releases the GIL meanwhile;
  context_first  import torch, make the context, then import trainables.trial, each timed: the split;
  no_gpu         import trainables.trial with every GPU hidden: the imports without CUDA's part;
  compiler_at_import  as_now without trainables.lazy_compile: bitsandbytes' torch.compile wrappers import
                 TorchInductor as bitsandbytes is imported, as every worker did before 2026-12-06.
One untimed process first (the page cache). --importtime: one more process under `python -X importtime`,
its raw output to that file, and the JSON's `importtime_by_package` the self time summed by top-level package.
Each run also says whether the imports loaded TorchInductor's compiler (`compiler_imported`): no trial asks for it
before it compiles its layers.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SIDES = ("as_now", "context_ahead", "context_first", "no_gpu", "compiler_at_import")

PROBE = """
import json, sys, threading, time
began = time.perf_counter()
phases = {}
def mark(name, since):
    now = time.perf_counter()
    phases[name] = round(now - since, 3)
    return now

def make_context():
    import torch
    if torch.cuda.is_available():
        torch.empty(1, device="cuda")
        torch.cuda.synchronize()
        return True
    return False

side = sys.argv[1]
gpu = None
if side in ("as_now", "no_gpu", "compiler_at_import"):
    at = began
    if side == "compiler_at_import":
        from trainables import lazy_compile
        lazy_compile.uninstall()
    import trainables.trial
    at = mark("trial_import_s", at)
    import torch
    phases["cuda_initialized_by_import"] = torch.cuda.is_initialized()
    gpu = make_context()
    mark("context_s", at)
elif side == "context_first":
    at = began
    import torch
    at = mark("torch_import_s", at)
    gpu = make_context()
    at = mark("context_s", at)
    import trainables.trial
    mark("trial_import_s", at)
else:  # context_ahead
    at = began
    import torch
    at = mark("torch_import_s", at)
    made = {}
    def context_beside():
        started = time.perf_counter()
        made["gpu"] = make_context()
        made["context_s"] = round(time.perf_counter() - started, 3)
    beside = threading.Thread(target=context_beside)
    beside.start()
    import trainables.trial
    at = mark("trial_import_s", at)
    beside.join()
    mark("join_s", at)
    gpu, phases["context_s"] = made["gpu"], made["context_s"]
phases["ready_s"] = round(time.perf_counter() - began, 3)
# TorchInductor, which bitsandbytes' torch.compile wrappers imported at import time until trainables.lazy_compile
phases["compiler_imported"] = "torch._inductor.compile_fx" in sys.modules
print(json.dumps({"side": side, "gpu": gpu, **phases}))
"""


def fresh_process_env(hide_gpus: bool = False) -> dict[str, str]:
    """A fresh process's environment: this checkout importable, the GPUs this one may see (its own
    CUDA_VISIBLE_DEVICES, as the caller chose them) visible unless `hide_gpus`."""
    env = dict(os.environ)
    if hide_gpus:
        env["CUDA_VISIBLE_DEVICES"] = ""
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def run_side(side: str) -> dict:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", PROBE, side], capture_output=True, text=True, cwd=ROOT,
                          env=fresh_process_env(hide_gpus=side == "no_gpu"), timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"side {side} failed: {done.stderr.strip().splitlines()[-1:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["process_s"] = round(time.perf_counter() - started, 3)  # the interpreter's own start included
    return result


def importtime_by_package(text: str, top: int = 20) -> dict[str, float]:
    """`python -X importtime`'s lines summed by top-level package: self seconds, largest first."""
    totals: dict[str, float] = {}
    for line in text.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, _cumulative, module = line[len("import time:"):].split("|", 2)
        package = module.strip().split(".")[0]
        totals[package] = totals.get(package, 0.0) + int(self_us) / 1e6
    ranked = sorted(totals.items(), key=lambda item: -item[1])
    return {package: round(seconds, 3) for package, seconds in ranked[:top]}


def summary(runs: list[dict]) -> dict:
    """Median, min and max of each timed phase, by side."""
    by_side: dict[str, dict] = {}
    for side in dict.fromkeys(run["side"] for run in runs):
        mine = [run for run in runs if run["side"] == side]
        phases = [key for key in mine[0] if key.endswith("_s")]
        by_side[side] = {phase: {"median": round(statistics.median(run[phase] for run in mine), 3),
                                 "min": min(run[phase] for run in mine), "max": max(run[phase] for run in mine)}
                         for phase in phases}
        by_side[side]["runs"] = len(mine)
    return by_side


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="processes of each side, by turns")
    parser.add_argument("--sides", default=",".join(SIDES), help=f"comma-separated, of {', '.join(SIDES)}")
    parser.add_argument("--out", required=True, type=Path, help="JSON file for the results")
    parser.add_argument("--importtime", type=Path, help="file for one process's raw `-X importtime` output")
    args = parser.parse_args(argv)
    sides = [side.strip() for side in args.sides.split(",") if side.strip()]
    unknown = [side for side in sides if side not in SIDES]
    if unknown or not sides:
        parser.exit(2, f"worker_start: --sides: unknown {', '.join(unknown) or '(none given)'}; "
                       f"choose from {', '.join(SIDES)}\n")
    if args.rounds < 1:
        parser.exit(2, f"worker_start: --rounds must be at least 1, not {args.rounds}\n")
    for path in filter(None, [args.out, args.importtime]):
        if not path.parent.is_dir():
            parser.exit(2, f"worker_start: {path}'s folder {path.parent} does not exist\n")

    run_side(sides[0])  # untimed: the page cache
    runs = []
    for round_number in range(args.rounds):
        for side in sides:
            runs.append({"round": round_number, **run_side(side)})
            print(json.dumps(runs[-1]), flush=True)
    result = {"sides": summary(runs), "runs": runs}
    if args.importtime:
        done = subprocess.run([sys.executable, "-X", "importtime", "-c", "import trainables.trial"], cwd=ROOT,
                              capture_output=True, text=True, timeout=600, env=fresh_process_env())
        args.importtime.write_text(done.stderr)
        if done.returncode != 0:
            raise RuntimeError(f"the -X importtime process failed: {done.stderr.strip().splitlines()[-1:]}")
        result["importtime_by_package"] = importtime_by_package(done.stderr)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    for side, phases in result["sides"].items():
        print(side, {phase: value["median"] for phase, value in phases.items() if isinstance(value, dict)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
