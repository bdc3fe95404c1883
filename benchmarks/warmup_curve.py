"""How a fresh GPU machine's speed for sweep trials changes under load, and what a warm-up must be.

On 2026-12-07 one H100 ran by hand's seed-0 arm twice, the second at once after the first: its
trials took 22 % less time (results/2026-12-07-hand-seed0), though the first had the sweep
chain's 60 s of matrix products before it. Whatever made the difference, every race timed on a
fresh machine carries it. This script measures a machine from its first minute:

    python benchmarks/warmup_curve.py --data DIALOGSUM --tokenizer TOKENIZER --trials 6 \
        --matmul-s 60 --load-s 480 --idle-s 60 --after-idle-runs 4 --out curve.json

N trials of the sweep's kind (the smollm2-135m shape with random weights, micro-batch 16 x 512,
qlora-sweep's trial code, each in a process of its own: gpu_sharing.py's workers) train together
in short runs, one after another; between runs, four probes say where a change comes from:

    cpu_loop_ms          a fixed pure-Python loop: the host's CPU
    launch_us            one tiny CUDA kernel launched and queued: a host-bound step's unit of cost
    matmul_tflops        bf16 8192^3 products timed with CUDA events: the GPU's own speed
    fresh_memory_gbps    1 GiB of new host memory written: a VM backing its memory on first touch

beside the host's CPU time since the last record (busy, and stolen by the hypervisor), its page
faults, its dirty page cache, and the GPU's SM clock and power sampled by nvidia-smi each second.
The phases, in order: cold (probes only), workers loaded, the chain's matrix-product warm-up
(--matmul-s, sweep_benchmark.warm_up_gpu), load (runs for --load-s), idle (--idle-s with nothing
running), after idle (--after-idle-runs runs). The summary: the plateau (the median of the last
five load runs' aggregate tokens/s), each load run's share of it, and the load's seconds until three
runs in a row come within 5 % of it: what a warm-up of trials must last.

--model runs the trials on a model folder (the real SmolLM2) instead of the shape's random weights:
sweep_benchmark.py warms a machine up so before its first arm.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

PLATEAU_RUNS = 5  # the last load runs whose median aggregate is the plateau
WITHIN = 0.05  # a run within this share of the plateau counts as warm
RUNS_TO_BE_WARM = 3  # warm from the first of this many warm runs in a row
CPU_LOOP = 2_000_000  # additions in the CPU probe (about 0.1 s on this project's CPU machines)
LAUNCHES = 5_000  # kernels in the launch probe
MATMUL_N, MATMUL_REPS = 8192, 10
FRESH_BYTES = 1 << 30


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    problem = check_args(args)
    if problem:
        print(f"warmup_curve: {problem}", file=sys.stderr)
        return 2
    import gpu_sharing  # heavy imports after the arguments are known to be good
    import trial_speed
    from sweep_benchmark import warm_up_gpu

    out = Path(args.out)
    clocks_file = out.with_name(out.stem + ".clocks.csv")
    result: dict[str, Any] = {"command": " ".join(sys.argv), "date": time.strftime("%Y-%m-%d"),
                              "device": gpu_sharing._device_name(), "trials": args.trials,
                              "micro_batch_size": args.micro_batch_size, "max_length": args.max_length,
                              "setting": args.setting, "records": []}
    started = time.time()
    host = HostCounters()
    sampler = start_clock_sampler(clocks_file)

    def record(phase: str, phase_started: float, run: dict[str, Any] | None = None) -> None:
        now = time.time()
        entry = {"phase": phase, "t_s": round(now - started, 1), "phase_t_s": round(now - phase_started, 1),
                 "time": now}
        if run is not None:
            entry.update(aggregate_tokens_per_s=round(run["aggregate_tokens_per_s"]),
                         overlap=round(run["overlap"], 3))
        entry.update(probes())
        entry.update(host.since_last())
        result["records"].append(entry)
        result["summary"] = summarize(result["records"])
        out.write_text(json.dumps(result, indent=1))
        shown = f"{entry['aggregate_tokens_per_s']} tokens/s, " if run is not None else ""
        _log(f"{phase} t={entry['t_s']:.0f}s: {shown}launch {entry['launch_us']} us, "
             f"matmul {entry['matmul_tflops']} TFLOP/s, cpu {entry['cpu_loop_ms']} ms, steal {entry['cpu_steal']}")

    try:
        record("cold", started)
        with tempfile.TemporaryDirectory(prefix="warmup-curve-") as scratch:
            model = Path(args.model) if args.model else trial_speed.build_random_model(
                args.shape, args.tokenizer, Path(args.model_cache or scratch) / f"random-{args.shape}")
            signals = Path(scratch) / "signals"
            signals.mkdir()
            sharing = argparse.Namespace(data=args.data, tokenizer=args.tokenizer, out=str(out),
                                         steps=args.steps, segment_warmup=args.segment_warmup,
                                         micro_batch_size=args.micro_batch_size, max_length=args.max_length,
                                         train_examples=args.train_examples)
            with gpu_sharing.Workers(sharing, model, {"sweep": args.setting}, {"sweep": [args.trials]},
                                     signals) as workers:
                record("loaded", started)
                phase_started = time.time()
                warm_up_gpu(args.matmul_s)
                record("matmul", phase_started)
                phase_started = time.time()
                while True:  # at least one run, then until --load-s have passed
                    record("load", phase_started, workers.run("sweep", args.trials))
                    if time.time() - phase_started >= args.load_s:
                        break
                phase_started = time.time()
                time.sleep(args.idle_s)
                record("idle", phase_started)
                phase_started = time.time()
                for _ in range(args.after_idle_runs):
                    record("after_idle", phase_started, workers.run("sweep", args.trials))
    finally:
        if sampler is not None:
            sampler.terminate()
            sampler.wait()
    if clocks_file.is_file():
        attach_clocks(result["records"], parse_clocks(clocks_file.read_text()))
        result["summary"] = summarize(result["records"])
        out.write_text(json.dumps(result, indent=1))
    print(table(result))
    return 0


def check_args(args: argparse.Namespace) -> str | None:
    """What is wrong with the arguments, in one line, before anything loads or is written."""
    for name in ("trials", "steps", "micro_batch_size", "max_length", "train_examples"):
        if getattr(args, name) < 1:
            return f"--{name.replace('_', '-')} {getattr(args, name)}: expected 1 or more"
    for name in ("matmul_s", "load_s", "idle_s", "after_idle_runs", "segment_warmup"):
        if getattr(args, name) < 0:
            return f"--{name.replace('_', '-')} {getattr(args, name)}: expected 0 or more"
    if not (Path(args.data) / "train.jsonl").is_file():
        return f"--data {args.data}: no train.jsonl there"
    if args.model and not (Path(args.model) / "config.json").is_file():
        return f"--model {args.model}: no config.json there"
    if not Path(args.tokenizer).is_dir():
        return f"--tokenizer {args.tokenizer}: not a folder"
    if not Path(args.out).parent.is_dir():
        return f"--out {args.out}: its folder does not exist"
    if "=" not in args.setting:
        return f"--setting {args.setting}: expected a=1,b=true (TrainingConfig fields)"
    return None


# --- the probes ---------------------------------------------------------------------------------

def probes(fresh_bytes: int = FRESH_BYTES) -> dict[str, float | None]:
    """The four probes, each the best of three where it is cheap: the machine's best at that moment.

    fresh_bytes: the host memory probe's size (a test passes less: first touch of a GiB took 14.5 s on a
    2-core CPU machine of this project's kind)."""
    import numpy
    import torch

    def cpu_loop() -> float:
        begun = time.perf_counter()
        total = 0
        for i in range(CPU_LOOP):
            total += i
        return time.perf_counter() - begun

    measured: dict[str, float | None] = {"cpu_loop_ms": round(min(cpu_loop() for _ in range(3)) * 1e3, 1)}
    begun = time.perf_counter()
    fresh = numpy.ones(fresh_bytes // 8)  # every page written once
    measured["fresh_memory_gbps"] = round(fresh_bytes / 1e9 / (time.perf_counter() - begun), 3)
    del fresh
    if not torch.cuda.is_available():
        measured.update(launch_us=None, matmul_tflops=None)
        return measured
    x = torch.zeros(1, device="cuda")
    launches = []
    for _ in range(3):
        torch.cuda.synchronize()
        begun = time.perf_counter()
        for _ in range(LAUNCHES):
            x.add_(1)
        torch.cuda.synchronize()
        launches.append((time.perf_counter() - begun) / LAUNCHES)
    measured["launch_us"] = round(min(launches) * 1e6, 2)
    a = torch.randn(MATMUL_N, MATMUL_N, device="cuda", dtype=torch.bfloat16)  # random: zeros run faster
    b = torch.randn(MATMUL_N, MATMUL_N, device="cuda", dtype=torch.bfloat16)
    a @ b  # noqa: B018 - cuBLAS's handle and plan, untimed
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(MATMUL_REPS):
        a @ b  # noqa: B018
    end.record()
    end.synchronize()
    measured["matmul_tflops"] = round(2 * MATMUL_N**3 * MATMUL_REPS / (start.elapsed_time(end) / 1e3) / 1e12)
    del a, b
    torch.cuda.empty_cache()
    return measured


class HostCounters:
    """The host's CPU time (busy, and stolen by the hypervisor) and page faults since the last call,
    and its dirty page cache now; None where this kernel (gVisor's, say) does not keep one."""

    def __init__(self) -> None:
        self.cpu, self.faults, self.when = _cpu_times(), _vmstat("pgfault"), time.time()

    def since_last(self) -> dict[str, float | None]:
        cpu, faults, when = _cpu_times(), _vmstat("pgfault"), time.time()
        measured: dict[str, float | None] = {"cpu_busy": None, "cpu_steal": None, "page_faults_per_s": None}
        if cpu and self.cpu:
            delta = [now - before for now, before in zip(cpu, self.cpu)]
            total = sum(delta) or 1
            idle = delta[3] + (delta[4] if len(delta) > 4 else 0)  # idle + iowait
            measured["cpu_busy"] = round(1 - idle / total, 3)
            measured["cpu_steal"] = round(delta[7] / total, 4) if len(delta) > 7 else None
        if faults is not None and self.faults is not None and when > self.when:
            measured["page_faults_per_s"] = round((faults - self.faults) / (when - self.when))
        measured["dirty_mb"] = _dirty_mb()
        self.cpu, self.faults, self.when = cpu, faults, when
        return measured


def _cpu_times() -> list[int] | None:
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return None
    return [int(v) for v in fields[1:]] if fields and fields[0] == "cpu" else None


def _vmstat(key: str) -> int | None:
    try:
        for line in Path("/proc/vmstat").read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    except (OSError, ValueError):
        return None
    return None


def _dirty_mb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("Dirty:"):
                return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError, IndexError):
        return None
    return None


# --- the GPU's clocks -------------------------------------------------------------------------------

CLOCK_FIELDS = "timestamp,clocks.sm,clocks.mem,utilization.gpu,power.draw,temperature.gpu"


def start_clock_sampler(path: Path) -> subprocess.Popen | None:
    """nvidia-smi writing the GPU's clocks each second into `path`; None without nvidia-smi."""
    if shutil.which("nvidia-smi") is None:
        return None
    return subprocess.Popen(["nvidia-smi", f"--query-gpu={CLOCK_FIELDS}", "--format=csv,noheader,nounits",
                             "-lms", "1000"], stdout=path.open("w"), stderr=subprocess.DEVNULL)


def parse_clocks(text: str) -> list[dict[str, float]]:
    """nvidia-smi's lines ('2026/12/07 09:00:01.123, 1980, 2619, 35, 310.5, 41') as samples with a
    Unix time; a line it could not fill ('[N/A]') is skipped."""
    samples = []
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 6:
            continue
        try:
            when = datetime.datetime.strptime(parts[0], "%Y/%m/%d %H:%M:%S.%f").timestamp()  # local, as time.time
            sm, mem, util, power, temperature = (float(p) for p in parts[1:])
        except ValueError:
            continue
        samples.append({"time": when, "sm_mhz": sm, "mem_mhz": mem, "util": util, "power_w": power,
                        "temperature_c": temperature})
    return samples


def attach_clocks(records: list[dict[str, Any]], samples: list[dict[str, float]]) -> None:
    """Each record gets the median SM clock, GPU utilization and power of the samples taken since
    the record before it: what the GPU ran at while that run trained."""
    before = float("-inf")
    for entry in records:
        window = [s for s in samples if before < s["time"] <= entry["time"]]
        for key in ("sm_mhz", "util", "power_w", "temperature_c"):
            entry[key] = round(statistics.median(s[key] for s in window), 1) if window else None
        before = entry["time"]


# --- the summary -----------------------------------------------------------------------------------

def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The plateau of the load runs, each load run's share of it, and the warm-up the load needed: its
    seconds at the end of the run before the first RUNS_TO_BE_WARM runs in a row within WITHIN of the
    plateau (None while fewer than PLATEAU_RUNS load runs have run). A later run below that band is a
    dip, counted apart: a warm machine has those too (2026-12-07: four runs at 0.89-0.94 after 4 minutes)."""
    load = [r for r in records if r["phase"] == "load"]
    if len(load) < PLATEAU_RUNS:
        return {"load_runs": len(load), "plateau_tokens_per_s": None}
    plateau = statistics.median(r["aggregate_tokens_per_s"] for r in load[-PLATEAU_RUNS:])
    shares = [r["aggregate_tokens_per_s"] / plateau for r in load]
    warm = [share >= 1 - WITHIN for share in shares]
    warm_from = next((i for i in range(len(load) - RUNS_TO_BE_WARM + 1) if all(warm[i:i + RUNS_TO_BE_WARM])), None)
    after = [r["aggregate_tokens_per_s"] / plateau for r in records if r["phase"] == "after_idle"]
    return {"load_runs": len(load), "plateau_tokens_per_s": round(plateau),
            "first_run_share": round(shares[0], 3), "shares": [round(s, 3) for s in shares],
            "warm_after_load_s": (None if warm_from is None else load[warm_from - 1]["phase_t_s"] if warm_from
                                  else 0.0),
            "dips_after_warm": 0 if warm_from is None else warm[warm_from:].count(False),
            "after_idle_shares": [round(s, 3) for s in after]}


def table(result: dict[str, Any]) -> str:
    lines = [f"{'phase':<11} {'t s':>6} {'tokens/s':>9} {'share':>6} {'launch us':>9} {'TFLOP/s':>7} "
             f"{'cpu ms':>7} {'steal':>6} {'SM MHz':>7} {'W':>6}"]
    plateau = result.get("summary", {}).get("plateau_tokens_per_s")
    for r in result["records"]:
        tokens = r.get("aggregate_tokens_per_s")
        share = f"{tokens / plateau:.3f}" if tokens and plateau else ""
        lines.append(f"{r['phase']:<11} {r['t_s']:>6.0f} {tokens or '':>9} {share:>6} {_shown(r['launch_us']):>9} "
                     f"{_shown(r['matmul_tflops']):>7} {_shown(r['cpu_loop_ms']):>7} {_shown(r['cpu_steal']):>6} "
                     f"{_shown(r.get('sm_mhz')):>7} {_shown(r.get('power_w')):>6}")
    summary = result.get("summary", {})
    lines.append(f"plateau {plateau} tokens/s; first load run {summary.get('first_run_share')} of it; warm after "
                 f"{summary.get('warm_after_load_s')} s of load, {summary.get('dips_after_warm')} dips after; "
                 f"after the idle {summary.get('after_idle_shares')}")
    return "\n".join(lines)


def _shown(value: Any) -> str:
    return "" if value is None else str(value)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="folder with train.jsonl")
    parser.add_argument("--tokenizer", required=True, help="a local tokenizer folder")
    parser.add_argument("--out", required=True, help="JSON file to write (rewritten after every record)")
    parser.add_argument("--shape", default="smollm2-135m", help="a shape of benchmarks/trial_speed.py (random weights)")
    parser.add_argument("--setting", default="gradient_checkpointing=false",
                        help="the trials' settings, a=1,b=true (default: as the sweep benchmark's trials ran)")
    parser.add_argument("--trials", type=int, default=6, help="trials training at once (the benchmark's 6)")
    parser.add_argument("--matmul-s", type=float, default=60, help="the chain's matrix-product warm-up first")
    parser.add_argument("--load-s", type=float, default=480, help="seconds of runs, one after another")
    parser.add_argument("--idle-s", type=float, default=60, help="then this long with nothing running")
    parser.add_argument("--after-idle-runs", type=int, default=4, help="then this many runs")
    parser.add_argument("--steps", type=int, default=15, help="timed steps of each trial in a run")
    parser.add_argument("--segment-warmup", type=int, default=3, help="untimed steps before them")
    parser.add_argument("--micro-batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--train-examples", type=int, default=2000)
    parser.add_argument("--model", help="a model folder to train instead of the shape's random weights")
    parser.add_argument("--model-cache", help="keep the random-weight model here and reuse it in a later run")
    return parser.parse_args(argv)


def _log(message: str) -> None:
    print(f"[warmup_curve] {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
