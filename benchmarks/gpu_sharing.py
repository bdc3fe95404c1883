"""How trials sharing one GPU slow each other: the aggregate real tokens/s of N trials training at
once on one GPU, each in a process of its own as Ray runs them, for each setting and N.

`gpus_per_trial: auto` packs trials onto a GPU by predicted memory. Issue 10 (item 4) asks it to
choose between more trials that recompute activations (less memory each) and fewer that do not,
whichever trains more tokens a second in all. That needs what one trial alone leaves of the GPU
(on an H200 a compiled 8B trial kept it busy 75 % of a step, a SmolLM2 trial far less) and what
recompute costs once the GPU is full: these runs measure both.

    python benchmarks/gpu_sharing.py --shape llama3-8b --data DIALOGSUM --tokenizer TOKENIZER \
        --setting "kept:compile_layers=true,gradient_checkpointing=false" --trials kept=1,2,3 \
        --setting "recomputed:compile_layers=true,gradient_checkpointing=true,activations_kept=0" \
        --trials recomputed=1,2,4,6 --rounds 2 --warmup-s 60 --out sharing.json

The protocol: the random-weight model is built once, and every worker (this script with
--worker; as many per setting as its largest N) loads it, its data and its trial side once and
stays: a run of N trials trains N of one setting's workers while the others wait, their memory
given back. An untimed warm-up runs the first setting until --warmup-s have passed (the card
speeds up over its first minutes of load); then --rounds rounds, each running every (setting, N)
in turn, settings alternating. In a run each of the N trains --segment-warmup untimed steps, waits
until all N are there, then trains --steps timed steps. Per run: each trial's tokens/s over its
own timed steps and their sum (the aggregate while all of them trained), its own peak memory
beside the planner's prediction for it, and how much of the run the timed windows overlapped. The
summary gives per setting and N the median and min-max of the aggregate, and the contention:
aggregate / (N x the median aggregate of N = 1).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

WAIT_S = 1800  # a worker that never gets there (a load that hangs) ends the run, not the machine's time


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        return worker(args)
    try:
        settings, counts = _runs_asked(args)
    except ValueError as error:
        print(f"gpu_sharing: {error}", file=sys.stderr)
        return 2
    import trial_speed  # heavy (torch, transformers): not for a worker's argument errors

    runs = _alternating(settings, counts)
    result: dict[str, Any] = {"device": _device_name(), "date": time.strftime("%Y-%m-%d"), "command": " ".join(sys.argv),
                              "shape": args.shape, "micro_batch_size": args.micro_batch_size,
                              "max_length": args.max_length, "settings": settings, "runs": []}
    with tempfile.TemporaryDirectory(prefix="gpu-sharing-") as scratch:
        models = Path(args.model_cache or scratch)  # without a cache, the random model goes with the run
        model = trial_speed.build_random_model(args.shape, args.tokenizer, models / f"random-{args.shape}")
        signals = Path(scratch) / "signals"
        signals.mkdir()
        with Workers(args, model, settings, counts, signals) as workers:
            started = time.perf_counter()
            while True:  # untimed: the card's clocks settle under load
                workers.run(*runs[0])
                if time.perf_counter() - started >= args.warmup_s:
                    break
            result["warm_up_s"] = round(time.perf_counter() - started)
            for round_number in range(1, args.rounds + 1):
                for name, n in runs:
                    run = workers.run(name, n)
                    result["runs"].append({"round": round_number, "setting": name, "trials": n, **run})
                    _log(f"round {round_number} {name} x{n}: {run['aggregate_tokens_per_s']:.0f} tokens/s in all, "
                         f"overlap {run['overlap']:.2f}")
                    result["summary"] = summarize(result["runs"])
                    Path(args.out).write_text(json.dumps(result, indent=1))
    return 0


def _alternating(settings: dict[str, str], counts: dict[str, list[int]]) -> list[tuple[str, int]]:
    """One round's runs, settings taking turns: a1 b1 a2 b2 b3 for a: 1,2 and b: 1,2,3."""
    order = [[(name, n) for n in counts.get(name, [1])] for name in settings]
    return [runs[i] for i in range(max(map(len, order))) for runs in order if i < len(runs)]


class Workers:
    """Each setting's workers, started and loaded once; a run gives N of one setting's workers a
    command file, waits until all N have trained their untimed steps, lets them time theirs
    together, and collects what they measured."""

    def __init__(self, args: argparse.Namespace, model: Path, settings: dict[str, str], counts: dict[str, list[int]],
                 signals: Path):
        self.args, self.signals, self.runs = args, signals, 0
        self.processes = {(name, i): subprocess.Popen(
            [sys.executable, __file__, "--worker", "--model", str(model), "--spec", spec, "--index", f"{name}-{i}",
             "--signals", str(signals), "--data", args.data, "--tokenizer", args.tokenizer, "--out", args.out,
             "--steps", str(args.steps), "--segment-warmup", str(args.segment_warmup),
             "--micro-batch-size", str(args.micro_batch_size), "--max-length", str(args.max_length),
             "--train-examples", str(args.train_examples)], stdout=sys.stderr)
            for name, spec in settings.items() for i in range(max(counts.get(name, [1])))}
        try:
            self._wait_for([f"loaded-{name}-{i}" for name, i in self.processes], "loading")
        except BaseException:
            self.__exit__()
            raise

    def __enter__(self) -> "Workers":
        return self

    def __exit__(self, *exc: Any) -> None:
        (self.signals / "stop").touch()
        for process in self.processes.values():
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def run(self, name: str, n: int) -> dict[str, Any]:
        self.runs += 1
        run = f"run{self.runs}"
        who = [f"{name}-{i}" for i in range(n)]
        (self.signals / f"{run}.tmp").write_text(json.dumps(who))
        (self.signals / f"{run}.tmp").rename(self.signals / f"{run}.json")  # appears whole to the workers
        self._wait_for([f"{run}-warm-{w}" for w in who], f"{run} ({n} x {name})")
        (self.signals / f"{run}-go").touch()
        self._wait_for([f"{run}-result-{w}.json" for w in who], f"{run} ({n} x {name})")
        trials = [json.loads((self.signals / f"{run}-result-{w}.json").read_text()) for w in who]
        return _run_record(trials)

    def _wait_for(self, names: list[str], what: str) -> None:
        waited = time.monotonic()
        while not all((self.signals / name).exists() for name in names):
            ended = {key: p.returncode for key, p in self.processes.items() if p.poll() is not None}
            if ended or time.monotonic() - waited > WAIT_S:
                raise RuntimeError(f"{what}: workers ended {ended} (or {WAIT_S} s passed) before it was done")
            time.sleep(0.1)


def _run_record(trials: list[dict[str, Any]]) -> dict[str, Any]:
    start, end = min(t["start"] for t in trials), max(t["end"] for t in trials)
    together = min(t["end"] for t in trials) - max(t["start"] for t in trials)
    return {"aggregate_tokens_per_s": sum(t["tokens_per_s"] for t in trials),
            "tokens_per_s": [round(t["tokens_per_s"]) for t in trials],
            "own_peak_gb": [t["own_peak_gb"] for t in trials],
            "predicted_peak_gb": trials[0]["predicted_peak_gb"],  # the planner's, for one trial of the setting
            "overlap": max(0.0, together) / (end - start) if end > start else 1.0}


def worker(args: argparse.Namespace) -> int:
    """One trial, loaded once; for each run that names it: its untimed steps, the wait for the
    others, its timed steps, what it measured."""
    import trial_speed
    import torch

    from trainables.config import ModelConfig
    from trainables.prompt import load_tokenizer

    tokenizer = load_tokenizer(ModelConfig(name_or_path=args.model))
    rows = trial_speed.load_rows(args.data, args.max_length, tokenizer, args.train_examples, 1)
    options = argparse.Namespace(micro_batch_size=args.micro_batch_size, no_padding_free=False,
                                 gradient_checkpointing="auto", max_new_tokens=96, max_length=args.max_length,
                                 trial_steps=None)
    signals = Path(args.signals)
    with tempfile.TemporaryDirectory(prefix="sharing-trainer-") as folder:
        side = trial_speed.trial_side(Path(args.model), rows, tokenizer, options, trial_speed._settings(args.spec),
                                      None, Path(folder))
        (signals / f"loaded-{args.index}").touch()
        _log(f"worker {args.index}: loaded")
        done = 0
        while not (signals / "stop").exists():
            command = signals / f"run{done + 1}.json"
            if not command.exists():
                time.sleep(0.05)
                continue
            done += 1
            if args.index not in json.loads(command.read_text()):
                continue
            window: dict[str, float] = {}
            speed = side.train(args.steps, args.segment_warmup, around=_all_at_once(signals, f"run{done}",
                                                                                   args.index, window))
            peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None
            measured = {"tokens_per_s": speed["tokens_per_s"], "own_peak_gb": peak,
                        "predicted_peak_gb": side.plan.predicted_peak_gb if side.plan else None, **window}
            (signals / f"run{done}-result-{args.index}.tmp").write_text(json.dumps(measured))
            (signals / f"run{done}-result-{args.index}.tmp").rename(signals / f"run{done}-result-{args.index}.json")
            if torch.cuda.is_available():
                torch.cuda.empty_cache()  # waiting, it holds its weights only: the next run's trials get the rest
    return 0


@contextlib.contextmanager
def _all_at_once(signals: Path, run: str, index: str, window: dict[str, float]) -> Iterator[None]:
    """Held over a worker's timed steps: they begin once every worker of the run has reached them."""
    (signals / f"{run}-warm-{index}").touch()
    waited = time.monotonic()
    while not (signals / f"{run}-go").exists():
        if time.monotonic() - waited > WAIT_S:
            raise RuntimeError("the other workers never reached their timed steps")
        time.sleep(0.02)
    window["start"] = time.time()
    try:
        yield
    finally:
        window["end"] = time.time()


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    by: dict[str, dict[int, list[float]]] = {}
    for run in runs:
        by.setdefault(run["setting"], {}).setdefault(run["trials"], []).append(run["aggregate_tokens_per_s"])
    summary: dict[str, Any] = {}
    for name, counts in by.items():
        alone = statistics.median(counts[1]) if 1 in counts else None
        summary[name] = {str(n): {"median": round(statistics.median(v)), "min": round(min(v)), "max": round(max(v)),
                                  "contention": (round(statistics.median(v) / (n * alone), 3) if alone else None)}
                         for n, v in sorted(counts.items())}
    return summary


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", default="llama3-8b", help="a shape of benchmarks/trial_speed.py (random weights)")
    parser.add_argument("--data", required=True, help="folder with train.jsonl")
    parser.add_argument("--tokenizer", required=True, help="a local tokenizer folder")
    parser.add_argument("--out", required=True, help="JSON file to write (rewritten after every run)")
    parser.add_argument("--setting", action="append", default=[], metavar="NAME:a=1,b=true",
                        help="a named trial setting (TrainingConfig fields, and attention), planned for a whole GPU")
    parser.add_argument("--trials", action="append", default=[], metavar="NAME=1,2,4",
                        help="how many trials of setting NAME train at once, run by run (default 1)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--warmup-s", type=float, default=60)
    parser.add_argument("--steps", type=int, default=10, help="timed steps of each trial")
    parser.add_argument("--segment-warmup", type=int, default=3, help="untimed steps before them (compiles)")
    parser.add_argument("--micro-batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--train-examples", type=int, default=2000)
    parser.add_argument("--model-cache", help="keep the random-weight model here and reuse it in a later run")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    parser.add_argument("--index", help=argparse.SUPPRESS)
    parser.add_argument("--signals", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def _runs_asked(args: argparse.Namespace) -> tuple[dict[str, str], dict[str, list[int]]]:
    """--setting NAME:settings and --trials NAME=1,2,4, checked before anything loads."""
    settings = dict(_named(spec, ":") for spec in args.setting)
    if not settings:
        raise ValueError("no --setting NAME:a=1,b=true given")
    counts = {}
    for name, values in (_named(spec, "=") for spec in args.trials):
        if name not in settings:
            raise ValueError(f"--trials {name}=...: no --setting is named {name!r} (named: {', '.join(settings)})")
        try:
            counts[name] = [int(n) for n in values.split(",")]
        except ValueError:
            counts[name] = []
        if not counts[name] or min(counts[name]) < 1:
            raise ValueError(f"--trials {name}={values}: expected whole numbers of trials, 1 or more, comma-separated")
    return settings, counts


def _named(text: str, separator: str) -> tuple[str, str]:
    name, sep, value = text.partition(separator)
    if not sep or not name or not value:
        raise ValueError(f"{text!r}: expected NAME{separator}{'settings' if separator == ':' else 'counts'}")
    return name, value


def _device_name() -> str:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"


def _log(message: str) -> None:
    print(f"[gpu_sharing] {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
