"""The GPU memory an idle Ray worker holds once it has imported what resources.preload_libraries has it
import, before any trial is its own: does importing the trial (bitsandbytes asks CUDA about the GPUs on
import) make a CUDA context, hundreds of MiB a process beside the trials?

    python benchmarks/idle_worker_memory.py --workers 6 --out idle_worker_memory.json
    python benchmarks/idle_worker_memory.py --workers 6 --out x.json torch bitsandbytes   # any modules

N fresh processes import the modules (default trainables.trial, what `trial` and `auto` preload) at once
and wait, as Ray's idle workers wait for a trial; nvidia-smi then reads the GPUs' used memory and the
processes using them. Then, the control, each process makes a CUDA context (one tensor on the GPU) and
nvidia-smi reads again: the imports' figure means something only where the contexts' is not 0. Used
memory is read for the whole machine, since in a container nvidia-smi may name processes by the host's
pids; the compute-apps count says how many processes hold a context.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from trainables.memory import nvidia_smi_query  # noqa: E402

IDLE_WORKER = """
import importlib, json, sys, time
began = time.perf_counter()
for module in sys.argv[1:]:
    importlib.import_module(module)
print(json.dumps({"import_s": round(time.perf_counter() - began, 2)}), flush=True)
sys.stdin.readline()  # idle, as a worker waits for its trial
try:
    import torch
    torch.ones(1, device="cuda")
    torch.cuda.synchronize()
    print(json.dumps({"context": "made"}), flush=True)
except Exception as why:
    print(json.dumps({"context": f"none: {type(why).__name__}: {str(why)[:160]}"}), flush=True)
sys.stdin.readline()
"""


def gpu_reading() -> dict | None:
    """The machine's GPUs' used memory (MiB, summed) and the processes holding a context on them."""
    used = nvidia_smi_query("memory.used")
    if not used or not all(row[0].isdigit() for row in used):
        return None
    apps = [row for row in nvidia_smi_query("pid,used_memory", of="compute-apps") or [] if len(row) == 2]
    return {"used_mib": sum(int(row[0]) for row in used),
            "processes": {row[0]: int(row[1]) if row[1].isdigit() else None for row in apps}}


def measure(workers: int, modules: list[str], before: dict, settle_s: float) -> dict:
    """`before`: gpu_reading() with none of the workers started; `settle_s`: the wait before each reading."""
    processes = [subprocess.Popen([sys.executable, "-c", IDLE_WORKER, *modules], cwd=ROOT, text=True,
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE) for _ in range(workers)]
    try:
        imported = [json.loads(process.stdout.readline()) for process in processes]
        time.sleep(settle_s)
        after_imports = gpu_reading()
        for process in processes:
            process.stdin.write("\n")
            process.stdin.flush()
        contexts = [json.loads(process.stdout.readline())["context"] for process in processes]
        time.sleep(settle_s)
        after_contexts = gpu_reading()
    finally:
        for process in processes:
            process.communicate("\n", timeout=120)
    ours = {str(process.pid) for process in processes}
    return {
        "modules": modules, "workers": workers,
        "import_s": [one["import_s"] for one in imported],
        "contexts": contexts,
        "readings": {"before": before, "after_imports": after_imports, "after_contexts": after_contexts},
        "per_worker_after_imports_mib": (after_imports["used_mib"] - before["used_mib"]) / workers,
        "per_worker_after_contexts_mib": (after_contexts["used_mib"] - before["used_mib"]) / workers,
        "processes_holding_a_context": {"after_imports": len(after_imports["processes"]) - len(before["processes"]),
                                        "after_contexts": len(after_contexts["processes"]) - len(before["processes"])},
        "our_pids_seen_by_nvidia_smi": sorted(ours & set(after_contexts["processes"])),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*", default=["trainables.trial"])
    parser.add_argument("--workers", type=int, default=6, help="idle processes at once (a sweep's trials at once)")
    parser.add_argument("--settle-s", type=float, default=2.0,
                        help="seconds between the workers' step and nvidia-smi's reading (its view lags a little)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error(f"--workers must be 1 or more, got {args.workers}")
    before = gpu_reading()
    if before is None:
        print("idle_worker_memory: nvidia-smi reads no GPU memory here; this measures a GPU machine", file=sys.stderr)
        return 2
    result = measure(args.workers, args.modules or ["trainables.trial"], before, args.settle_s)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({key: result[key] for key in ("per_worker_after_imports_mib", "per_worker_after_contexts_mib",
                                                   "processes_holding_a_context", "import_s")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
