"""Which imports ask CUDA about the GPUs, on the machine this runs on: a diagnosis for what a local
Ray may preload in its idle workers (trainables.warm.CUDA_SAFE_IMPORTS, resources.preload_libraries).

    python benchmarks/cuda_on_import.py --out cuda_on_import.json            # the preload list, each alone
    python benchmarks/cuda_on_import.py --out x.json torch transformers peft  # any modules

Each module is imported alone in a fresh process (all at once, one process each), after torch with
its Python-level CUDA questions watched (is_available, device_count, _lazy_init, get_device_capability:
who asked, from which file). Then the process hides every GPU, as Ray does when it gives a worker its
trial (CUDA_VISIBLE_DEVICES), and asks the CUDA runtime how many it sees: 0 means the import left the
choice of GPUs to Ray; more means the process kept the GPUs it saw at import. A first line with no
module ("(none)") is the control: it must see 0, or the check itself is wrong on this machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

PROBE = """
import importlib, json, os, sys, time, traceback
import torch
asked = []
def watched(name, function):
    def asking(*args, **kwargs):
        frames = [f.filename.rsplit("site-packages/", 1)[-1] + ":" + str(f.lineno)
                  for f in traceback.extract_stack()[:-1]]
        asked.append({"call": name, "from": frames[-4:]})
        return function(*args, **kwargs)
    return asking
for name in ("is_available", "device_count", "_lazy_init", "get_device_capability"):
    setattr(torch.cuda, name, watched(name, getattr(torch.cuda, name)))
started = time.time()
for module in sys.argv[1:]:
    importlib.import_module(module)
seconds = time.time() - started
os.environ["CUDA_VISIBLE_DEVICES"] = ""
seen = torch._C._cuda_getDeviceCount() if hasattr(torch._C, "_cuda_getDeviceCount") else None  # None: a CPU build
print(json.dumps({"module": " ".join(sys.argv[1:]) or "(none)", "gpus_seen_after_hiding": seen,
                  "asked": asked, "import_s": round(seconds, 2)}))
"""


def probe(modules: list[str]) -> dict:
    env = {key: value for key, value in os.environ.items() if key != "CUDA_VISIBLE_DEVICES"}
    done = subprocess.run([sys.executable, "-c", PROBE, *modules], capture_output=True, text=True, cwd=ROOT,
                          env=env, timeout=600)
    if done.returncode != 0:
        return {"module": " ".join(modules), "error": done.stderr.strip().splitlines()[-1:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="*", help="modules to import, each alone (default: the preload list)")
    parser.add_argument("--out", required=True, type=Path, help="JSON file for the results")
    args = parser.parse_args(argv)
    if not args.out.parent.is_dir():
        parser.exit(2, f"cuda_on_import: --out's folder {args.out.parent} does not exist\n")
    modules = args.modules
    if not modules:
        sys.path.insert(0, str(ROOT))
        from trainables.warm import CUDA_SAFE_IMPORTS

        modules = list(CUDA_SAFE_IMPORTS)
    groups = [[]] + [[module] for module in modules] + ([modules] if len(modules) > 1 else [])
    with ThreadPoolExecutor(max_workers=len(groups)) as pool:
        results = list(pool.map(probe, groups))
    for result in results:
        callers = sorted({a["call"] + " <- " + a["from"][-1] for a in result.get("asked", [])})
        print(f"{result['module'][:60]:60} seen {result.get('gpus_seen_after_hiding', '?')}  "
              f"{result.get('import_s', '')} s  {'; '.join(callers)[:200] or result.get('error', '')}")
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
