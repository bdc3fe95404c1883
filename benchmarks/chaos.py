"""A random-kill soak: sweeps on a tiny model whose driver (kill -9, then `qlora-sweep resume`) or a
trial's worker (SIGKILL) is killed at random moments, K times; then what must hold.

    python tests/tiny_model.py /tmp/tiny
    python benchmarks/chaos.py --model /tmp/tiny --kills 30 --seed 0 --out chaos.json

Each sweep (4 trials, 2 at a time, 3 rungs) takes kills until it ends; a new sweep starts while
kills remain. A kill waits until the sweep has started (Tune's tuner.pkl written: a driver killed
before that cannot be resumed, and says so); its kind is drawn, driver or worker, and it comes
0.5 to 6 s later (a worker kill waits, if need be, for a trial to run). Afterwards, for every
sweep:
- every configured trial ran to its end exactly once: as many trial folders and distinct
  configurations as trials configured, each finished (or stopped early by ASHA), none failed;
- no rung is in result.json twice: a rung run again after a kill keeps the rerun, and the first
  attempt moves to result.superseded.json;
- `qlora-sweep best` answers;
and no process of the soak's Ray (all of it under its own RAY_TMPDIR) is left running.
The JSON records every kill and every check; the exit code is 1 when anything was lost.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.helpers import process_tree, ray_processes_still_running  # noqa: E402

TRIALS = 4
RUNG_STEPS = 4
MAX_RUNGS = 3
SWEEP_TIMEOUT_S = 900
LEFTOVER_WAIT_S = 120


def sweep_config(model: str, storage: Path, name: str, kills: int) -> dict[str, Any]:
    return {
        "name": name, "storage": str(storage), "trial_retries": kills + 1,  # every worker kill costs a retry
        "model": {"name_or_path": model},
        "data": {"max_train_examples": 64, "max_validation_examples": 4},
        "training": {"steps_per_rung": RUNG_STEPS, "micro_batch_size": 2, "gradient_checkpointing": False},
        "evaluation": {"max_new_tokens": 8, "batch_size": 4},
        "search": {"lora_r": {"choice": [2, 4]}, "lora_alpha": {"choice": [4, 8]},
                   "learning_rate": {"low": 1.0e-4, "high": 3.0e-2, "log": True},
                   "max_length": {"choice": [160, 192]}, "num_trials": TRIALS, "max_concurrent_trials": 2},
        "scheduler": {"metric": "eval_loss", "max_rungs": MAX_RUNGS, "grace_period": 1},
        "resources": {"cpus_per_trial": 1},
    }


def result_rows(trial: Path, name: str = "result.json") -> list[dict[str, Any]]:
    path = trial / name
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def trial_folders(experiment: Path) -> list[Path]:
    return sorted(p for p in experiment.iterdir() if p.is_dir() and (p / "params.json").is_file()) \
        if experiment.is_dir() else []


def running_workers(experiment: Path) -> list[int]:
    """Trial workers alive now: the pid a trial's last reported rung came from."""
    pids = []
    for trial in trial_folders(experiment):
        rows = result_rows(trial)
        if rows and rows[-1].get("rung", 0) < MAX_RUNGS and Path(f"/proc/{rows[-1]['pid']}").exists():
            pids.append(int(rows[-1]["pid"]))
    return pids


def start(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    handle = log.open("ab")
    return subprocess.Popen([sys.executable, "-m", "search", *command], cwd=ROOT, env=env, stdout=handle,
                            stderr=subprocess.STDOUT)


def kill_driver(driver: subprocess.Popen) -> None:
    ray = process_tree(driver.pid)
    driver.send_signal(signal.SIGKILL)
    driver.wait(timeout=60)
    deadline = time.time() + 120  # Ray tears the dead driver's local cluster down by itself
    while ray_processes_still_running(ray) and time.time() < deadline:
        time.sleep(0.5)


def soak_one_sweep(args: argparse.Namespace, rng: random.Random, env: dict[str, str], workdir: Path, index: int,
                   kills: list[dict[str, Any]]) -> Path:
    name = f"chaos-{index}"
    config = workdir / f"{name}.yaml"
    config.write_text(yaml.safe_dump(sweep_config(args.model, workdir / "results", name, args.kills)))
    experiment = workdir / "results" / name
    log = workdir / f"{name}.log"
    driver = start(["run", str(config)], env, log)
    started = time.time()
    while time.time() - started < SWEEP_TIMEOUT_S:
        if driver.poll() is not None:
            if driver.returncode != 0:
                raise SystemExit(f"{name}: the driver failed ({driver.returncode}); see {log}")
            return experiment
        ready = (experiment / "tuner.pkl").is_file() and any(result_rows(t) for t in trial_folders(experiment))
        if len(kills) >= args.kills or not ready:
            time.sleep(0.5)
            continue
        kind = rng.choice(["driver", "worker"])
        time.sleep(rng.uniform(0.5, 6.0))
        workers = running_workers(experiment) if kind == "worker" else []
        while kind == "worker" and not workers and driver.poll() is None:
            time.sleep(0.2)  # a resumed driver's trials are starting again: wait for one to run
            workers = running_workers(experiment)
        if driver.poll() is not None:
            continue
        at = round(time.time() - started, 1)
        if kind == "worker":
            victim = rng.choice(workers)
            try:
                os.kill(victim, signal.SIGKILL)
            except ProcessLookupError:
                continue  # it finished its trial meanwhile: no kill happened
            kills.append({"sweep": name, "kind": "trial worker", "pid": victim, "at_s": at})
        else:
            kill_driver(driver)
            kills.append({"sweep": name, "kind": "driver", "pid": driver.pid, "at_s": at,
                          "state_left": saved_state(experiment)})
            driver = start(["resume", str(experiment)], env, log)
        print(f"[chaos] kill {len(kills)}/{args.kills}: {kills[-1]['kind']} of {name} at {at} s", flush=True)
    raise SystemExit(f"{name}: not finished after {SWEEP_TIMEOUT_S} s; see {log}")


def saved_state(experiment: Path) -> dict[str, Any]:
    """What a resume will find: how many trials the newest experiment state lists and the searcher
    made, and what is wrong with the set, if anything (a torn file, files from different saves),
    which the resume then mends (search.state_files)."""
    from search.state_files import state_problem
    from search.tuner import newest_state_files, read_saved_trials

    try:
        saved = read_saved_trials(newest_state_files(experiment))
        counts = {"listed": len(saved.listed) if saved.listed is not None else None, "made": saved.made}
    except Exception as exc:  # a torn file
        counts = {"unreadable": type(exc).__name__}
    try:
        problem = state_problem(experiment)
    except Exception as exc:  # a torn tuner.pkl: the resume says so and stops
        problem = str(exc)
    return {**counts, "problem": problem}


def folders_without_params(experiment: Path) -> list[str]:
    """Trial folders Tune never recorded a start for (a checkpoint uploaded by a trial whose driver
    died before its state was saved): the resumed sweep runs that trial again under a new id."""
    return sorted(p.name for p in experiment.iterdir() if p.is_dir() and p.name.startswith("run_trial_")
                  and not (p / "params.json").is_file()) if experiment.is_dir() else []


def error_tail(trial: Any) -> str | None:
    """The last line of a Tune trial's error.txt."""
    path = Path(trial.path or "", "error.txt")
    lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()] if path.is_file() else []
    return lines[-1][:300] if lines else None


def check_sweep(experiment: Path, env: dict[str, str]) -> dict[str, Any]:
    """What must hold after the kills, as counts of what did not."""
    from search.results import load_experiment, trial_rows

    folders = trial_folders(experiment)
    configs = {json.dumps(json.loads((t / "params.json").read_text()), sort_keys=True) for t in folders}
    rows = trial_rows(load_experiment(str(experiment)))
    unfinished = {r["trial_id"]: {"status": r["status"], "error": error_tail(r["trial"])}
                  for r in rows if r["status"] not in ("TERMINATED", "STOPPED_EARLY")}
    duplicated = []
    for trial in folders:
        steps = [row["step"] for row in result_rows(trial)]
        if steps != sorted(set(steps)):
            duplicated.append(trial.name)
    best = subprocess.run([sys.executable, "-m", "search", "best", str(experiment)], cwd=ROOT, env=env,
                          capture_output=True, text=True)
    return {
        "experiment": str(experiment),
        "trials": len(folders), "distinct_configurations": len(configs),
        "missing_or_extra_trials": abs(TRIALS - len(folders)) + (len(folders) - len(configs)),
        "unfinished_trials": list(unfinished), "trials_with_a_duplicated_rung": duplicated,
        "reruns_set_aside": sum(len(result_rows(t, "result.superseded.json")) for t in folders),
        "best_answers": best.returncode == 0,
        # Not counted: what explains a loss when there is one.
        "unfinished_why": unfinished,
        "trial_ids_in_state": sorted(r["trial_id"] for r in rows),
        "folders_without_params": folders_without_params(experiment),
    }


def leftover_processes(ray_dir: Path) -> list[str]:
    """Processes of the soak's Ray still alive LEFTOVER_WAIT_S after the last sweep ended."""
    deadline = time.time() + LEFTOVER_WAIT_S
    while True:
        found = []
        for proc in Path("/proc").iterdir():
            if proc.name.isdigit():
                try:
                    command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                    zombie = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
                except OSError:
                    continue
                if str(ray_dir) in command and not zombie:
                    found.append(f"{proc.name} {command[:120]}")
        if not found or time.time() > deadline:
            return found
        time.sleep(2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a local model folder (tests/tiny_model.py builds one)")
    parser.add_argument("--kills", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="JSON file to write")
    parser.add_argument("--workdir", help="where sweeps and logs go (default: a new temporary folder)")
    args = parser.parse_args(argv)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="qlora-sweep-chaos-")).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    # Every Ray process of the soak names this folder, so leftovers are found by it; under /tmp,
    # as Ray's socket paths must stay short (AF_UNIX).
    ray_dir = Path(tempfile.mkdtemp(prefix="qs-chaos-ray-"))
    env = {**os.environ, "RAY_TMPDIR": str(ray_dir), "RAY_ADDRESS": "local"}
    rng = random.Random(args.seed)
    kills: list[dict[str, Any]] = []
    started = time.time()
    experiments = []
    while len(kills) < args.kills or not experiments:
        experiments.append(soak_one_sweep(args, rng, env, workdir, len(experiments), kills))
    sweeps = [check_sweep(experiment, env) for experiment in experiments]
    for sweep, experiment in zip(sweeps, experiments):
        if sweep["missing_or_extra_trials"] or sweep["unfinished_trials"] or not sweep["best_answers"]:
            # The drivers' own words, less the live view's progress lines.
            lines = (workdir / f"{experiment.name}.log").read_text(errors="replace").splitlines()
            sweep["log_tail"] = [line for line in lines if line.strip() and not line.startswith("[")][-25:]
    leftovers = leftover_processes(ray_dir)
    shutil.rmtree(ray_dir, ignore_errors=True)
    lost = sum(s["missing_or_extra_trials"] + len(s["unfinished_trials"]) + len(s["trials_with_a_duplicated_rung"])
               + (not s["best_answers"]) for s in sweeps) + len(leftovers)
    summary = {
        "command": " ".join(sys.argv), "date": time.strftime("%Y-%m-%d"), "seed": args.seed,
        "kills_tried": len(kills), "driver_kills": sum(k["kind"] == "driver" for k in kills),
        "worker_kills": sum(k["kind"] == "trial worker" for k in kills),
        "sweeps": sweeps, "kills": kills, "leftover_processes": leftovers, "lost": lost,
        "wall_s": round(time.time() - started, 1), "workdir": str(workdir),
    }
    Path(args.out).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(f"[chaos] {len(kills)} kills ({summary['driver_kills']} drivers, {summary['worker_kills']} trial workers) "
          f"over {len(sweeps)} sweeps in {summary['wall_s']} s; lost: {lost}", flush=True)
    return 0 if lost == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
