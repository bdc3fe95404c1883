"""Where a trial's first rung loses its time: trials of the recipe's hyperparameters, one after
another in this one process (the first cold, the rest in the worker it leaves: trainables.warm), as
the sweep benchmark's recipe arm plans them, every optimizer step timed alone, what each
evaluation generated counted, and chosen steps profiled.

    python benchmarks/first_rung.py configs/sweep_benchmark_gpu.yaml --out first_rung.json \
        [--set KEY=VALUE ...] [--trials 3] [--threads kept|new|alternate] [--profile-steps 1,2,21] [--warmup-s 30]
        [--candidate KEY=VALUE ...] [--max-lengths 512,496,480] [--learning-rate 1e-3]

Why it exists: on an H200 (2026-12-01, benchmarks/results/2026-12-01-sweep) a trial's first rung
trained at 0.4-0.7 of its later rungs' tokens/s, even the recipe's lone trial with the GPU to
itself, and its evaluation took twice as long on the same dialogues. The sweep's rows give each
rung's first and median step; this gives every step, so a rung slow throughout (a clock that rises
over a minute, new shapes) shows apart from a few slow first steps (kernels loaded or compiled,
memory the allocator gets), and a profile of a slow step against a later one says which.

Each trial runs trainables.trial.run_trial itself, with a session that keeps its rows here instead
of Ray Tune's, in a folder of its own (the Trainer's checkpoints never land beside --out), in the
worker's kept trial thread as qlora-sweep runs it, or (--threads new) each in a new thread as Ray
Tune starts one per trial: the sweep's warm first rungs paid what this process's second trial, in
the first one's thread, did not (2026-12-02). `--threads alternate` is the A/B: the cold trial in
the kept thread, then the warm ones take turns, a new thread, the kept one, a new one..., so a GPU
whose pace drifts favours neither side; `warm_first_rung` in the summary gives each side's first
rung against its second, median and range. `--candidate KEY=VALUE` is the same A/B for a setting,
in the kept thread: the warm trials take turns without it (baseline) and with it (candidate); with
--profile-steps, `kernel_cost_by_side` sets the two sides' kernels at those steps side by side (where
training.deterministic's cost goes: benchmarks/deterministic_cost.sh).
`--max-lengths` gives the trials max_lengths in turn (the recipe's 512 otherwise): a length no
earlier trial trained gives a trial shapes this process never ran, as a sweep's trial meets them
when its worker's last trial had another max_length. The JSON is rewritten after every rung.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import json
import math
import os
import pstats
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterator

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT)]

from search.config import load_config  # noqa: E402 - light: pydantic and yaml, no torch
from sweep_benchmark import RECIPE, RECIPE_VALUES, warm_up_gpu  # noqa: E402 - the recipe arm's, and its warm-up
from trainables.errors import ConfigError  # noqa: E402

PROFILE_TOP = 12  # operations listed per profiled step
PYTHON_PROFILE_TOP = 40  # functions listed for --python-profile-trial
# From Python 3.12 cProfile runs on sys.monitoring, whose events come from every thread of the process: the
# listing then mixes the trial thread's functions with the others' (tokenizing, batches, the waiting main
# thread), and a return on one thread can close a call that another opened, so the trial's own outer functions
# may be missing (on the H100's host, 3.12.3, run_trial was not among the 40; 2026-12-06). Before 3.12 it follows
# the thread that enabled it alone.
PYTHON_PROFILE_THREADS = "the trial's thread" if sys.version_info < (3, 12) else "every thread (Python 3.12+)"


class LocalSession:
    """A trial's rungs handed to `on_rung` (a trainables.report.TrialSession without Ray), never resumed."""

    def __init__(self, on_rung) -> None:
        self.on_rung = on_rung

    def report(self, metrics: dict[str, Any], checkpoint_dir: str | None) -> None:
        self.on_rung(metrics)

    def placement(self) -> dict[str, str]:
        import torch

        return {"node_id": "local", "gpu_ids": "0" if torch.cuda.is_available() else ""}

    @contextlib.contextmanager
    def checkpoint_to_resume(self) -> Iterator[None]:
        yield None


def step_timer(profile_steps: set[int], record: dict[str, Any]):
    """A Trainer callback: each step's wall time (the GPU synchronized at both ends), its tokens, the
    Triton kernels compiled into the on-disk cache meanwhile, the optimizer's learning rate, and a
    profile of the chosen steps."""
    import torch
    from transformers import TrainerCallback

    from trainables.report import synchronize_gpu

    class StepTimer(TrainerCallback):
        profiler = None
        began = ended = None  # the training's start (after on_train_begin), and the last step's end

        def on_train_begin(self, args, state, control, **kwargs):
            self.began = time.perf_counter()
            record["cudnn_attention"] = torch.backends.cuda.cudnn_sdp_enabled()  # as the trial set it
            record["deterministic"] = torch.are_deterministic_algorithms_enabled()  # training.deterministic
            record["cublas_workspace_config"] = os.environ.get("CUBLAS_WORKSPACE_CONFIG")
            # training.fill_uninitialized_memory: torch reads it only while deterministic kernels are on
            record["fill_uninitialized_memory"] = torch.utils.deterministic.fill_uninitialized_memory

        def on_step_begin(self, args, state, control, **kwargs):
            synchronize_gpu()
            now = time.perf_counter()
            # before this step since the last one ended (or the training began): batches fetched,
            # and after a rung's last step its evaluation, checkpoint and report
            self.before_s = now - (self.ended or self.began)
            step = state.global_step + 1
            if step in profile_steps:
                self.profiler = torch.profiler.profile(activities=profiler_activities())
                self.profiler.__enter__()
            self.triton_files, self.tokens = triton_cache_files(), state.num_input_tokens_seen
            self.started = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            synchronize_gpu()
            self.ended = time.perf_counter()
            seconds = self.ended - self.started
            row = {"step": state.global_step, "s": round(seconds, 4), "before_s": round(self.before_s, 4),
                   "tokens": int(state.num_input_tokens_seen - self.tokens),
                   "triton_compiled": triton_cache_files() - self.triton_files}
            optimizer = kwargs.get("optimizer")
            if optimizer is not None:  # the rate this step trained at, as the optimizer had it
                row["lr"] = optimizer.param_groups[0]["lr"]
            if self.profiler is not None:
                self.profiler.__exit__(None, None, None)
                record["profiles"][str(state.global_step)] = profile_summary(self.profiler, seconds)
                self.profiler = None
            record["steps"].append(row)

    return StepTimer()


def profiler_activities() -> list[Any]:
    import torch

    activities = [torch.profiler.ProfilerActivity.CPU]
    if torch.cuda.is_available():
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    return activities


def profile_summary(profiler: Any, seconds: float) -> dict[str, Any]:
    """A profiled step: its wall time, the GPU's busy time in it, the operations (and CUDA runtime
    calls) that took the most host time of their own, and every kernel's own time (`kernels`: on a CPU
    the aten ops'), which kernel_cost_by_side compares between an A/B's sides."""
    from trial_speed import time_breakdown

    events = profiler.key_averages()
    device_us = sum(getattr(e, "self_device_time_total", 0) for e in events)
    top = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:PROFILE_TOP]
    return {"wall_s": round(seconds, 4), "device_busy_s": round(device_us / 1e6, 4),
            "host_self_s": round(sum(e.self_cpu_time_total for e in events) / 1e6, 4),
            "top_host": [{"name": e.key, "calls": e.count, "self_ms": round(e.self_cpu_time_total / 1e3, 2)}
                         for e in top],
            "kernels": time_breakdown(events, seconds, top=None)}


def heaviest_functions(profile: cProfile.Profile) -> list[dict[str, Any]]:
    """A whole trial's Python functions by the time spent inside them and what they called: where
    time outside the timed steps and evaluations goes (the Trainer's setup, batches, checkpoints)."""
    stats = pstats.Stats(profile).stats
    rows = sorted(stats.items(), key=lambda item: item[1][3], reverse=True)[:PYTHON_PROFILE_TOP]
    return [{"function": f"{Path(file).name}:{line}({name})", "calls": calls, "own_s": round(own, 3),
             "with_callees_s": round(cumulative, 3)} for (file, line, name), (_, calls, own, cumulative, _) in rows]


def triton_cache_files() -> int:
    folder = Path(os.environ.get("TRITON_CACHE_DIR") or Path.home() / ".triton" / "cache")
    return sum(len(files) for _, _, files in os.walk(folder)) if folder.is_dir() else 0


@contextlib.contextmanager
def generations_counted(calls: list[dict[str, int]]) -> Iterator[None]:
    """Every generate call's batch and the new tokens it ran for: a batch runs until its longest
    summary ends, so a rung whose summaries do not stop yet generates longer."""
    from transformers.generation.utils import GenerationMixin

    generate = GenerationMixin.generate

    def counted(model, *args, **kwargs):
        prompt = kwargs.get("input_ids", args[0] if args else None)
        output = generate(model, *args, **kwargs)
        calls.append({"batch": int(output.shape[0]), "new_tokens": int(output.shape[1] - prompt.shape[1])})
        return output

    GenerationMixin.generate = counted
    try:
        yield
    finally:
        GenerationMixin.generate = generate


def thread_for(index: int, threads: str) -> str:
    """Which thread trial `index` (0-based) runs in: `threads` itself, or for `alternate` the kept
    thread for the cold trial (so the kept thread is the warm one) and then new and kept by turns."""
    if threads != "alternate":
        return threads
    return "new" if index % 2 else "kept"


def side_of(index: int, args: argparse.Namespace) -> str:
    """The A/B side trial `index` (0-based) is on: with --candidate, baseline for the cold trial and
    then candidate and baseline by turns; else the kind of thread it runs in."""
    if args.candidate:
        return "candidate" if index % 2 else "baseline"
    return thread_for(index, args.threads)


def max_length_of(index: int, args: argparse.Namespace) -> int:
    return args.max_lengths[index % len(args.max_lengths)] if args.max_lengths else RECIPE_VALUES["max_length"]


def trial_values(args: argparse.Namespace) -> dict[str, Any]:
    """The recipe's hyperparameters, at --learning-rate where given: a setting's effect on what a trial
    learns shows at the rates a sweep's best trials train at (1e-3 and up on SmolLM2), not only at the
    recipe's 2e-4."""
    return {**RECIPE_VALUES, **({"learning_rate": args.learning_rate} if args.learning_rate else {})}


def in_thread(run, threads: str) -> str:
    """`run()` as qlora-sweep runs a trial: in the worker's kept trial thread (`kept`), or in a new
    thread of its own (`new`), as Ray Tune starts one for each trial; the thread's name (unique to
    it, where the system may give a later thread an ended one's id)."""
    from trainables.warm import in_trial_thread

    def identified() -> str:
        run()
        return threading.current_thread().name

    if threads == "kept":
        return in_trial_thread(identified)
    with ThreadPoolExecutor(max_workers=1) as fresh:  # a pool of its own: a thread no trial ran in before
        return fresh.submit(identified).result()


def warm_the_profiler() -> None:
    """CUPTI starts on a process's first profile (seconds on a GPU): pay it before any timed step."""
    import torch

    with torch.profiler.profile(activities=profiler_activities()):
        torch.ones(8, device="cuda" if torch.cuda.is_available() else "cpu").sum().item()


def recipe_sweep(args: argparse.Namespace, candidate: bool = False) -> Any:
    """The config as the sweep benchmark's recipe arm runs it (one trial, the recipe's values), --set
    on top, and the --candidate settings on that for the candidate side."""
    return load_config(args.config, [*RECIPE, *args.set, *(args.candidate if candidate else [])])


def planned_trials(args: argparse.Namespace) -> tuple[list[Any], Any]:
    """The recipe arm's trial (at each trial's max_length), as qlora-sweep's driver plans it on this
    machine, once per trial, from the candidate side's config for a candidate trial."""
    import torch

    from search.packing import TrialPlanner
    from trainables.memory import local_gpu_memory_bytes

    gpus = torch.cuda.device_count()
    planners = {}
    for candidate in (False, True) if args.candidate else (False,):
        sweep = recipe_sweep(args, candidate)
        if not gpus:
            sweep = sweep.model_copy(update={"resources": sweep.resources.model_copy(update={"gpus_per_trial": 0})})
        planners[candidate] = TrialPlanner.for_cluster(sweep, local_gpu_memory_bytes() if gpus else None,
                                                       os.cpu_count(), gpus)
    trials = [planners[side_of(index, args) == "candidate"].trial_config(
        {**trial_values(args), "max_length": max_length_of(index, args)}) for index in range(args.trials)]
    return trials, recipe_sweep(args)


def run(args: argparse.Namespace) -> dict[str, Any]:
    started = time.perf_counter()
    import torch

    import trainables.trial
    from trial_speed import modeling_module_restored

    imports_s = time.perf_counter() - started
    trials, sweep = planned_trials(args)
    torch.set_num_threads(max(1, int(sweep.resources.cpus_per_trial)))  # what Ray gives a trial's worker
    warm_the_profiler()
    warm_up_gpu(args.warmup_s)
    result: dict[str, Any] = {
        "command": " ".join(sys.argv), "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "torch": torch.__version__, "imports_s": round(imports_s, 1), "warmup_s": args.warmup_s,
        "hyperparameters": trial_values(args), "threads": args.threads, "candidate": args.candidate,
        "max_lengths": args.max_lengths, "plan": trials[0].plan.model_dump(mode="json"), "trials": []}
    out = Path(args.out)
    for index, trial in enumerate(trials):
        record: dict[str, Any] = {"trial": index + 1, "threads": thread_for(index, args.threads),
                                  "side": side_of(index, args), "max_length": trial.hyperparameters.max_length,
                                  "plan": trial.plan.model_dump(mode="json"), "rungs": [], "steps": [],
                                  "profiles": {}, "generations": []}
        result["trials"].append(record)

        def on_rung(metrics: dict[str, Any]) -> None:
            rung = {k: v for k, v in metrics.items() if not isinstance(v, str)}
            rung["generate_calls"], record["generations"][:] = list(record["generations"]), []
            record["rungs"].append(rung)
            out.write_text(json.dumps(result, indent=1))

        python_profile = cProfile.Profile() if index + 1 == args.python_profile_trial else None

        def one_trial(trial=trial, record=record, on_rung=on_rung, python_profile=python_profile) -> None:
            # Liger's kernels (training.liger_kernels) replace RoPE in the modeling module for the whole
            # process: undone after each trial, so that a side without them trains without them
            with python_profile or contextlib.nullcontext(), modeling_module_restored():
                trainables.trial.run_trial(trial, time.perf_counter(), session=LocalSession(on_rung),
                                           callbacks=[step_timer(set(args.profile_steps), record)])

        with tempfile.TemporaryDirectory(prefix="first_rung-") as folder, contextlib.chdir(folder), \
                generations_counted(record["generations"]):
            record["thread"] = in_thread(one_trial, record["threads"])
        del record["generations"]
        if python_profile is not None:
            record["python_profile"] = heaviest_functions(python_profile)
            record["python_profile_threads"] = PYTHON_PROFILE_THREADS
    result["summary"] = summary(result)
    result["warm_first_rung"] = warm_first_rung(result)
    result["rung_scores"] = rung_scores(result)
    result["kernel_cost_by_side"] = kernel_cost_by_side(result)
    out.write_text(json.dumps(result, indent=1))
    return result


def summary(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Per trial and rung: its wall time and parts, its first step against its median, and how long
    its evaluation generated."""
    rows = []
    for trial in result["trials"]:
        for rung in trial["rungs"]:
            rows.append({"trial": trial["trial"], "threads": trial["threads"], "side": trial["side"],
                         "max_length": trial["max_length"], "rung": rung["rung"],
                         "warm_start": rung["warm_start"],
                         **{k: round(rung[k], 2) for k in ("rung_s", "startup_s", "train_s", "eval_loss_s", "rouge_s",
                                                           "step_s_first", "step_s_median", "train_s_beyond_median")
                            if isinstance(rung.get(k), (int, float))},
                         # what the rung evaluated: an A/B of evaluation settings shows here whether its sides differ
                         **{k: rung[k] for k in ("eval_loss_examples", "rouge_examples") if k in rung},
                         "tokens_per_s": round(rung["tokens_per_s"]),
                         "new_tokens": [call["new_tokens"] for call in rung["generate_calls"]]})
    return rows


FIRST_RUNG_PARTS = ("rung_s", "train_s", "eval_loss_s", "rouge_s")
LATER_RUNG_PARTS = ("rung_s", "train_s", "step_s_median")  # a side's pace once started, in seconds


def warm_first_rung(result: dict[str, Any]) -> dict[str, Any]:
    """Per A/B side (kind of thread, or baseline and candidate), the warm trials' first rung against
    their second (the issue's target: at most 1.3x), for the whole rung and each part, and their
    second rung's own seconds (`later_rung`: is the side slower once started?): median, lowest and
    highest over the trials."""
    ratios: dict[str, dict[str, list[float]]] = {}
    later: dict[str, dict[str, list[float]]] = {}
    for trial in result["trials"]:
        rungs = trial["rungs"]
        if len(rungs) < 2 or not rungs[0]["warm_start"]:
            continue
        side = ratios.setdefault(trial["side"], {part: [] for part in FIRST_RUNG_PARTS})
        for part in FIRST_RUNG_PARTS:
            first, second = rungs[0][part], rungs[1][part]
            if math.isfinite(first) and second > 0:  # NaN where a rung had no such part: no ratio
                side[part].append(first / second)
        for part in LATER_RUNG_PARTS:
            later.setdefault(trial["side"], {}).setdefault(part, []).append(rungs[1][part])
    return {name: {"trials": len(parts["rung_s"]), **_spread(parts), "later_rung": _spread(later[name])}
            for name, parts in ratios.items()}


SCORES = ("train_loss", "eval_loss", "rougeL")


def rung_scores(result: dict[str, Any]) -> dict[str, Any]:
    """Per A/B side and rung, what every trial of the side (the cold one too: a trial trains alike
    warm or cold, tests/test_warm.py) scored: the rung's mean training loss, validation loss and
    ROUGE-L, median, lowest and highest. A setting that changes a trial's numerics (float32 dense
    layers, Liger's kernels) shows here: the sides train the same hyperparameters on the same rows
    in the same order, so their training losses compare step for step, as the sweep benchmark's
    `same_hyperparameters` compares the arms (where qlora-sweep's first rung ended 0.02 higher below
    a rate of 1e-3, 2026-12-03)."""
    scores: dict[str, dict[int, dict[str, list[float]]]] = {}
    for trial in result["trials"]:
        for number, rung in enumerate(trial["rungs"], start=1):
            side = scores.setdefault(trial["side"], {}).setdefault(number, {score: [] for score in SCORES})
            for score in SCORES:
                value = rung.get(score)
                if isinstance(value, (int, float)) and math.isfinite(value):
                    side[score].append(value)
    return {name: {str(number): {"trials": max(len(v) for v in values.values()), **_spread(values, digits=5)}
                   for number, values in rungs.items()}
            for name, rungs in scores.items()}


KERNEL_DIFFERENCES = 20  # kernels listed by kernel_cost_by_side


def kernel_cost_by_side(result: dict[str, Any]) -> dict[str, Any]:
    """With --candidate and profiled steps, where the setting's cost (or saving) lands on the device: per
    side, each kernel's own time in a profiled step, the mean over its warm trials' profiled steps (a step
    a kernel did not run in counts 0; the cold trial left out, its steps load and compile), summed and by
    category; and the kernels whose time differs most, candidate minus baseline, a kernel one side never
    ran included: which kernels a switch such as training.deterministic swaps or slows."""
    from trial_speed import kernel_category

    steps: dict[str, list[dict[str, float]]] = {}
    for trial in result["trials"][1:]:
        for profile in trial["profiles"].values():
            steps.setdefault(trial["side"], []).append({row["name"]: row["s"] for row in profile["kernels"]["top"]})
    if sorted(steps) != ["baseline", "candidate"]:
        return {}
    means = {side: {name: sum(step.get(name, 0.0) for step in profiled) / len(profiled)
                    for name in {name for step in profiled for name in step}} for side, profiled in steps.items()}

    def by_category(kernels: dict[str, float]) -> dict[str, float]:
        categories: Counter[str] = Counter()
        for name, seconds in kernels.items():
            categories[kernel_category(name)] += seconds
        return {name: round(seconds, 4) for name, seconds in categories.most_common()}

    def difference(name: str) -> float:
        return means["candidate"].get(name, 0.0) - means["baseline"].get(name, 0.0)

    names = sorted(set(means["baseline"]) | set(means["candidate"]), key=lambda name: -abs(difference(name)))
    return {side: {"profiled_steps": len(steps[side]), "kernel_s": round(sum(means[side].values()), 4),
                   "by_category_s": by_category(means[side])} for side in ("baseline", "candidate")} | {
        "largest_differences": [{"name": name, "baseline_s": round(means["baseline"].get(name, 0.0), 5),
                                 "candidate_s": round(means["candidate"].get(name, 0.0), 5),
                                 "difference_s": round(difference(name), 5)} for name in names[:KERNEL_DIFFERENCES]]}


def _spread(parts: dict[str, list[float]], digits: int = 3) -> dict[str, dict[str, float]]:
    return {part: {"median": round(statistics.median(values), digits), "min": round(min(values), digits),
                   "max": round(max(values), digits)} for part, values in parts.items() if values}


def checked(args: argparse.Namespace) -> None:
    """Refuse what cannot run, before anything loads: too few trials, a profiled step that is no step."""
    if args.trials < 1:
        raise ValueError(f"--trials {args.trials}: at least 1")
    if not 0 <= args.python_profile_trial <= args.trials:
        raise ValueError(f"--python-profile-trial {args.python_profile_trial}: 0 (none) to --trials")
    if args.learning_rate is not None and not 0 < args.learning_rate < 1:
        raise ValueError(f"--learning-rate {args.learning_rate}: above 0 and below 1")
    if any(step < 1 for step in args.profile_steps):
        raise ValueError(f"--profile-steps {args.profile_steps}: steps count from 1")
    if args.candidate and args.threads == "alternate":
        raise ValueError("--candidate with --threads alternate: one A/B at a time")
    recipe_sweep(args)  # ConfigError names the problem
    if not args.candidate:
        return
    try:
        recipe_sweep(args, candidate=True)
    except ConfigError as error:  # --set's valid here, so the bad override is a --candidate one
        raise ConfigError(str(error).replace("--set ", "--candidate ", 1)) from None


def max_lengths(text: str) -> list[int]:
    """--max-lengths: whole numbers above 0, comma-separated."""
    values = [value.strip() for value in text.split(",") if value.strip()]
    if not all(value.isdigit() and int(value) > 0 for value in values):
        raise ValueError(f"--max-lengths {text}: comma-separated whole numbers above 0")
    return [int(value) for value in values]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", help="a sweep config (the sweep benchmark's: configs/sweep_benchmark_gpu.yaml)")
    parser.add_argument("--out", required=True, help="JSON file, rewritten after every rung")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config overrides, as run's")
    parser.add_argument("--trials", type=int, default=3, help="trials one after another in this process")
    parser.add_argument("--profile-steps", default="1,2,21",
                        help="optimizer steps to profile, comma-separated (1-based)")
    parser.add_argument("--warmup-s", type=float, default=0, help="untimed GPU load before the first trial")
    parser.add_argument("--threads", choices=("kept", "new", "alternate"), default="kept",
                        help="kept: every trial in the process's one trial thread, as qlora-sweep runs them; new: "
                        "each trial in a new thread, as Ray Tune would (CUDA libraries cache per thread); "
                        "alternate: the cold trial kept, then the warm ones new and kept by turns (the A/B)")
    parser.add_argument("--candidate", action="append", default=[], metavar="KEY=VALUE",
                        help="the A/B of a setting: the warm trials take turns without it and with it (on --set)")
    parser.add_argument("--max-lengths", default="",
                        help="comma-separated max_length of each trial in turn (default: the recipe's, 512)")
    parser.add_argument("--learning-rate", type=float, default=None,
                        help="every trial's learning rate (default: the recipe's, 2e-4)")
    parser.add_argument("--python-profile-trial", type=int, default=0,
                        help="this trial (1-based) runs under cProfile: its heaviest functions go in the JSON "
                             "(from Python 3.12, every thread's: python_profile_threads)")
    args = parser.parse_args(argv)
    try:
        args.profile_steps = [int(step) for step in args.profile_steps.split(",") if step.strip()]
        args.max_lengths = max_lengths(args.max_lengths)
        checked(args)
    except (ValueError, ConfigError) as error:
        message = str(error) if not str(error).startswith("invalid literal") else f"--profile-steps: {error}"
        print(f"first_rung: {message}", file=sys.stderr)
        return 2
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    result = run(args)
    for row in result["summary"]:
        print(json.dumps(row))
    print(json.dumps({"warm_first_rung": result["warm_first_rung"]}))
    print(json.dumps({"rung_scores": result["rung_scores"]}))
    if result["kernel_cost_by_side"]:
        print(json.dumps({"kernel_cost_by_side": result["kernel_cost_by_side"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
