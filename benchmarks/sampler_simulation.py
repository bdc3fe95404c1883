"""How many random trials Optuna's TPE should take before it models, for a sweep the size of the GPU
benchmark's, replayed on a surrogate of the trials the H200 ran (no GPU, seconds).

The sweep benchmark's 12 trials, 6 at a time, are scored by a surrogate fitted to every trial the
H200 ran on 2026-12-04 (benchmarks/results/2026-12-04-sweep-500 and -sweep-r256, both arms, both
seeds): ROUGE-L at rung 1 and at rung 3 as a quadratic in log10(learning rate x alpha ratio), the one
scale the runs showed, plus log2(r) and max_length, with the fit's own residual noise on every
observed score; above the rate at which every run's trials diverged, 0. The sweep is replayed as
Ray Tune runs it: Optuna's sampler asked for each new trial (the running ones known to it, as
OptunaSearch's ask/tell leaves them), ASHA's asynchronous cut after rung 1 (reduction factor 3), the
best chosen on rung 3's observed score. What counts is the chosen trial's *true* rung-3 score: the
quality its adapter has, free of the luck that chose it.

A surrogate is not the GPU: it tells which settings are worth a GPU run, not what they will score.

    python benchmarks/sampler_simulation.py --seeds 300 --out benchmarks/results/<date>-sampler/simulation.json
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import warnings
from pathlib import Path

import numpy as np
import optuna

ROOT = Path(__file__).resolve().parent.parent
RUNS = [ROOT / "benchmarks/results/2026-12-04-sweep-500", ROOT / "benchmarks/results/2026-12-04-sweep-r256"]
DIVERGED = 0.05  # a rung-1 ROUGE-L under this: the trial diverged (training loss 12-27 in every such run)


def measured_trials(folders: list[Path]) -> list[dict]:
    """Every searching arm's trials: hyperparameters and ROUGE-L by rung (a run copied into a later
    folder counted once)."""
    seen, trials = set(), []
    for folder in folders:
        for params in sorted(folder.glob("seed*/[pq]*-s[0-9]/*/params.json")):  # plain-script, qlora-sweep
            progress = params.parent / "progress.csv"
            if not progress.is_file():
                continue
            rows = list(csv.DictReader(progress.open()))
            hp = json.loads(params.read_text())
            key = (params.parent.parent.name, params.parent.name)
            if key in seen or not rows:
                continue
            seen.add(key)
            trials.append({**hp, "rouge": [float(row["rougeL"]) for row in rows]})
    return trials


def features(lr_times_ratio: np.ndarray, rank: np.ndarray, max_length: np.ndarray) -> np.ndarray:
    x = np.log10(lr_times_ratio)
    return np.stack([np.ones_like(x), x, x * x, np.log2(rank), (max_length >= 512).astype(float)], axis=1)


class Surrogate:
    """ROUGE-L at rungs 1 and 3 from the measured trials (least squares), with their residual noise."""

    def __init__(self, trials: list[dict]):
        scale = np.array([t["learning_rate"] * t["lora_alpha_ratio"] for t in trials])
        rank = np.array([t["lora_r"] for t in trials], float)
        length = np.array([t["max_length"] for t in trials], float)
        x = features(scale, rank, length)
        rung1 = np.array([t["rouge"][0] for t in trials])
        healthy = rung1 >= DIVERGED
        self.diverges_from = float(scale[~healthy].min()) if (~healthy).any() else math.inf
        self.rung1, self.noise1 = self._fit(x[healthy], rung1[healthy])
        full = np.array([len(t["rouge"]) >= 3 for t in trials]) & healthy
        rung3 = np.array([t["rouge"][2] if len(t["rouge"]) >= 3 else 0.0 for t in trials])
        self.rung3, self.noise3 = self._fit(x[full], rung3[full])
        self.fitted_on = {"trials": len(trials), "rung1": int(healthy.sum()), "rung3": int(full.sum())}

    @staticmethod
    def _fit(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
        coef, *_ = np.linalg.lstsq(x, y, rcond=None)
        residual = y - x @ coef
        return coef, float(np.sqrt(np.sum(residual ** 2) / max(1, len(y) - x.shape[1])))

    def true_scores(self, hp: dict) -> tuple[float, float]:
        scale = hp["learning_rate"] * hp["lora_alpha_ratio"]
        if scale >= self.diverges_from:
            return 0.0, 0.0
        x = features(np.array([scale]), np.array([float(hp["lora_r"])]), np.array([float(hp["max_length"])]))[0]
        return max(0.0, float(x @ self.rung1)), max(0.0, float(x @ self.rung3))


def suggest(trial: optuna.Trial, space: dict) -> dict:
    return {"lora_r": trial.suggest_categorical("lora_r", space["lora_r"]),
            "lora_alpha_ratio": trial.suggest_categorical("lora_alpha_ratio", space["lora_alpha_ratio"]),
            "learning_rate": trial.suggest_float("learning_rate", *space["learning_rate"], log=True),
            "max_length": trial.suggest_categorical("max_length", space["max_length"])}


def replay(surrogate: Surrogate, sampler: optuna.samplers.BaseSampler, space: dict, rng: np.random.Generator,
           trials: int = 12, concurrent: int = 6, reduction_factor: int = 3) -> dict:
    """One sweep: trials start as slots free up, each rung takes one unit of time, ASHA cuts after
    rung 1 below the (1 - 1/rf) quantile of the rung-1 scores recorded before it (Ray's async
    ASHA); returns the chosen trial's true rung-3 score and how many trials diverged."""
    study = optuna.create_study(direction="maximize", sampler=sampler)
    running: list[dict] = []  # {"trial", "true": (rung 1, rung 3), "rung", "ends"}
    recorded_rung1: list[float] = []
    finished: list[tuple[float, float]] = []  # (observed rung 3, true rung 3)
    started = diverged = 0
    clock = 0.0
    while started < trials or running:
        while started < trials and len(running) < concurrent:
            trial = study.ask()
            hp = suggest(trial, space)
            true1, true3 = surrogate.true_scores(hp)
            diverged += true1 == 0.0
            running.append({"trial": trial, "true": (true1, true3), "rung": 1, "ends": clock + 1.0})
            started += 1
        running.sort(key=lambda r: r["ends"])
        now = running.pop(0)
        clock = now["ends"]
        true1, true3 = now["true"]
        if now["rung"] == 1:
            observed = max(0.0, true1 + rng.normal(0, surrogate.noise1)) if true1 else 0.0
            cut = np.percentile(recorded_rung1, (1 - 1 / reduction_factor) * 100) if recorded_rung1 else None
            recorded_rung1.append(observed)
            if cut is None or observed >= cut:
                running.append({**now, "rung": 3, "ends": clock + 2.0})  # rungs 2 and 3
                continue
            study.tell(now["trial"], observed)
        else:
            observed = max(0.0, true3 + rng.normal(0, surrogate.noise3)) if true3 else 0.0
            finished.append((observed, true3))
            study.tell(now["trial"], observed)
    chosen = max(finished, default=(0.0, 0.0))
    return {"chosen_true": chosen[1], "chosen_observed": chosen[0], "diverged": diverged, "finished": len(finished),
            "finished_true": [true for _, true in finished]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=300, help="sweeps replayed for each setting")
    parser.add_argument("--random-trials", default="2,4,6,10",
                        help="TPE's n_startup_trials to compare, comma-separated (10: Optuna's default)")
    parser.add_argument("--trials", type=int, default=12, help="trials a sweep runs (the benchmark's 12)")
    parser.add_argument("--concurrent", type=int, default=6, help="trials at a time (the benchmark's 6)")
    parser.add_argument("--noise", type=float, default=None,
                        help="rung 3's observation noise, ROUGE-L std (default: the fit's residual, misfit included)")
    parser.add_argument("--out", type=Path, help="JSON of every setting's outcome")
    args = parser.parse_args(argv)
    try:
        settings = [int(n) for n in args.random_trials.split(",")]
    except ValueError:
        parser.error(f"--random-trials: whole numbers separated by commas, got {args.random_trials!r}")
    for name in ("seeds", "trials", "concurrent"):
        if getattr(args, name) < 1:
            parser.error(f"--{name}: at least 1, got {getattr(args, name)}")
    if args.noise is not None and args.noise < 0:
        parser.error(f"--noise: 0 or more, got {args.noise}")
    if min(settings) < 0:
        parser.error(f"--random-trials: 0 or more each, got {args.random_trials!r}")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    surrogate = Surrogate(measured_trials(RUNS))
    if args.noise is not None:  # rung 1 keeps its ratio to rung 3's
        surrogate.noise1, surrogate.noise3 = surrogate.noise1 * args.noise / surrogate.noise3, args.noise
    spaces = {"lr 1e-4..1e-2": (1e-4, 1e-2), "lr 1e-4..3e-3": (1e-4, 3e-3)}
    outcomes: dict[str, dict] = {}
    for space_name, lr_range in spaces.items():
        space = {"lora_r": [32, 64, 128, 256], "lora_alpha_ratio": [0.5, 1, 2, 4], "learning_rate": lr_range,
                 "max_length": [384, 512]}
        for random_trials in settings:
            runs = [replay(surrogate, optuna.samplers.TPESampler(seed=seed, n_startup_trials=random_trials),
                           space, np.random.default_rng(10_000 + seed), args.trials, args.concurrent)
                    for seed in range(args.seeds)]
            chosen = np.array([r["chosen_true"] for r in runs])
            name = f"{space_name}, random_trials {random_trials}"
            outcomes[name] = {"chosen_true_mean": float(chosen.mean()),
                              "chosen_true_p10": float(np.percentile(chosen, 10)),
                              "chosen_true_median": float(np.median(chosen)),
                              "chosen_observed_mean": float(np.mean([r["chosen_observed"] for r in runs])),
                              "diverged_per_sweep": float(np.mean([r["diverged"] for r in runs])),
                              "sweeps": len(runs), "chosen_true": chosen.round(5).tolist()}
            print(f"{name:40s} chosen (true rung 3) mean {chosen.mean():.4f} p10 {np.percentile(chosen, 10):.4f}"
                  f"  diverged {outcomes[name]['diverged_per_sweep']:.2f}/sweep")
    baseline = outcomes["lr 1e-4..1e-2, random_trials 10"]["chosen_true"] if 10 in settings else None
    if baseline is not None:
        for name, outcome in outcomes.items():  # paired by seed: the same seed's noise draws and first trials
            gap = np.array(outcome["chosen_true"]) - np.array(baseline)
            outcome["over_optuna_default"] = {"mean": float(gap.mean()),
                                              "sem": float(gap.std(ddof=1) / math.sqrt(len(gap))),
                                              "better": int((gap > 1e-9).sum()), "worse": int((gap < -1e-9).sum())}
    report = {"surrogate": {"fitted_on": surrogate.fitted_on, "noise_rung1": surrogate.noise1,
                            "noise_rung3": surrogate.noise3, "diverges_from_lr_x_ratio": surrogate.diverges_from,
                            "rung1": surrogate.rung1.tolist(), "rung3": surrogate.rung3.tolist()},
              "sweep": {"trials": args.trials, "concurrent": args.concurrent, "reduction_factor": 3},
              "outcomes": outcomes}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1))
    for name, outcome in outcomes.items():
        if "over_optuna_default" in outcome:
            gap = outcome["over_optuna_default"]
            print(f"{name:40s} over Optuna's default: {gap['mean'] * 100:+.2f} points (sem {gap['sem'] * 100:.2f}),"
                  f" better in {gap['better']}, worse in {gap['worse']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
