"""What a sweep buys, and how soon: qlora-sweep against Ray Tune glued by hand, on the same GPU.

    python benchmarks/sweep_benchmark.py configs/sweep_benchmark_gpu.yaml --seeds 0 1 \
        --out benchmarks/results/<date>-sweep [--set KEY=VALUE ...] [--arms ...] [--analyze-only]

For each seed (the searcher's and the training seed), in this order on one machine:
  zero_shot     the base model without an adapter;
  recipe        r=32, alpha=32, learning rate 2e-4, max_length 512, plain LoRA (whatever
                search.loraplus_lr_ratio says): one trial with the sweep's per-trial budget
                (max_rungs x steps_per_rung steps), scored on the whole validation set;
  plain_script  benchmarks/plain_ray_tune.py: Ray Tune by hand (OptunaSearch, ASHA, peft,
                bitsandbytes, none of qlora-sweep's trial code), the same search space, trials,
                rungs, seeds and trials at a time, each trial 1/that of the GPU;
  levers_off    (optional) qlora-sweep with its levers off: whole-set ROUGE each rung, padded
                batches, recompute, one GPU per trial, a fresh process per trial;
  qlora_sweep   the config as given; with --sweep-trials N it proposes N trials where by hand
                proposes search.num_trials, searching on in the time it saves (with the same seeded
                proposals and count both arms end on the same values, and which scores them higher
                is training's run-to-run spread; 36 to 12 on 2026-12-06 did not change the outcome).
The config holds data.test_examples dialogues out of train (seeded): no arm trains on them or
selects on them. Each arm's best adapter (the one its own search picked on validation) is scored
on them afterwards, the sweep arms with `qlora-sweep best NAME --test`, the others with the same
scorer (trainables.score_file).

Per seed, into OUT/summary.json: each arm's best validation ROUGE-L, when it was first reached
(seconds since the arm's first trial began), wall time, GPU-hours and test ROUGE-L;
`sooner_than_plain`: the plain script's time to its best over qlora-sweep's time to reach that
value (undefined where qlora-sweep never reaches it; not given where the two searched different
spaces, as after one is run again on a changed config: `search_spaces_differ` says how, from the
search section each arm's test score records); `shared_best`: the same ratio at the lower of
the two arms' bests, which both reach; `sooner_to_plain_best_values`: the same ratio at the
trial of by hand's best values, where qlora-sweep trained them to the same rung (then whichever
scored them higher is training's run-to-run spread, not the search);
`same_trials` (where qlora-sweep ran more trials): its best, time to it and `sooner_than_plain`
over its first trials as many as by hand's, by when each began; the plain script's
`best_rescored`: its best adapter scored on validation again by qlora-sweep's evaluator (its own generation picked it), so the two bests
compare; qlora-sweep's first-rung and later-rung times (cold and warm workers);
`same_hyperparameters`: the trials both arms trained alike, qlora-sweep's ROUGE-L and training
loss minus the by-hand arm's, rung by rung; its `rescored`: a few such pairs' adapters scored again
on validation by one evaluator outside any training process, beside the scores their runs gave them
(OUT/seed<N>/rescored_pairs.json, written while the runs' checkpoints are on disk).
OUT/sweep_curves.png: best-so-far against wall time for every arm. Each arm's folder is in
OUT/seed<N>/ as it finishes, so a run cut short keeps what it did: --resume runs only the arms that
have no test score yet (and those --rerun names, their earlier runs set aside), and --analyze-only
re-reads them (and merges seeds run apart). Zero-shot is scored once.

A rerun repeats only with `--set training.deterministic=true` (both arms then train with torch's
deterministic kernels): with the default, fastest kernels, trials of the same values and seed train
losses that differ in the 5th-6th digit on a GPU, and a test score moves with them; with it, 24 trials
in four sweeps on three H100s had one value each, at 0.90x the pace by turns (0.86-0.95x) since torch no
longer fills new memory for them (0.72x before; benchmarks/results/2026-12-05-determinism-repeat,
2026-12-06-cublas-workspace). Even then a sweep arm's trials may differ between runs, as Optuna and
ASHA see results in the order they arrive.
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
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from search.config import SearchConfig, load_config
from search.experiment import DRIVER_HEARTBEAT
from search.space import largest_corner

RECIPE_VALUES = {"lora_r": 32, "lora_alpha": 32, "learning_rate": 2.0e-4, "max_length": 512}
RECIPE = ["search.lora_r={choice: [32]}", "search.lora_alpha={choice: [32]}", "search.lora_alpha_ratio=null",
          "search.learning_rate={choice: [2.0e-4]}", "search.max_length={choice: [512]}", "search.loraplus_lr_ratio=1",
          "search.num_trials=1", "search.max_concurrent_trials=1", "evaluation.rung_examples=all"]
LEVERS_OFF = ["resources.gpus_per_trial=1", "evaluation.rung_examples=all", "data.reuse_tokenized=false",
              "training.padding_free=false", "training.gradient_checkpointing=true", "evaluation.batch_size=16",
              "resources.reuse_workers=false"]
PROTOCOL = ("one machine, arms one at a time after an untimed load of the trials' own work (--warmup-s); "
            "plain_script runs before qlora_sweep on even seeds and after it on odd ones; times from each arm's "
            "first trial start")
ARMS = ("zero_shot", "recipe", "plain_script", "levers_off", "qlora_sweep")
DEFAULT_ARMS = ("zero_shot", "recipe", "plain_script", "qlora_sweep")
FOLDERS = {"recipe": "recipe", "plain_script": "plain-script", "levers_off": "levers-off", "qlora_sweep": "qlora-sweep"}


# --- reading an arm's results ------------------------------------------------------------------

def rows_by_trial(experiment: Path) -> list[tuple[Path, list[dict[str, Any]]]]:
    """Each trial's folder and the rows it reported, in folder order."""
    return [(result.parent, [json.loads(line) for line in result.read_text().splitlines() if line.strip()])
            for result in sorted(experiment.glob("*/result.json"))]


def rows_of(experiment: Path) -> list[dict[str, Any]]:
    return [row for _, rows in rows_by_trial(experiment) for row in rows]


def curve(experiment: Path, metric: str = "rougeL") -> dict[str, Any]:
    """Best-so-far whole-validation-set metric against seconds since the arm's first trial began."""
    rows = rows_of(experiment)
    if not rows:
        raise SystemExit(f"{experiment}: no results")
    return curve_of_rows(rows, metric)


def curve_of_rows(rows: list[dict[str, Any]], metric: str = "rougeL") -> dict[str, Any]:
    start = arm_start(rows)
    whole = max((r.get("rouge_examples") or 0) for r in rows)
    scored = sorted((r["timestamp"] - start, r[metric]) for r in scored_on_whole_set(rows, metric))
    points, best = [], float("-inf")
    for seconds, value in scored:
        if value > best:
            best = value
            points.append((seconds, value))
    wall = max(r["timestamp"] for r in rows) - start
    return {"points": points, "best": best if points else None, "time_to_best_s": points[-1][0] if points else None,
            "wall_s": wall, "validation_examples": whole, "trials": len({r["trial_id"] for r in rows})}


def first_trials(experiment: Path, count: int) -> list[dict[str, Any]]:
    """The rows of the arm's first `count` trials by when each began: near what an arm of `count` trials runs.
    The seeded searcher's first proposals are the same whatever number follows them; ASHA may cut one of
    them otherwise where a later trial reported the same rung before it."""
    reported = [rows for _, rows in rows_by_trial(experiment) if rows]
    return [row for rows in sorted(reported, key=arm_start)[:count] for row in rows]  # arm_start: a trial's too


def arm_start(rows: list[dict[str, Any]]) -> float:
    """When the arm's first trial began: the clock every time of the arm counts from."""
    first_rungs = [r for r in rows if r.get("training_iteration") == 1]
    return (min(r["timestamp"] - r["time_total_s"] for r in first_rungs) if first_rungs
            else min(r["timestamp"] for r in rows))


def scored_on_whole_set(rows: list[dict[str, Any]], metric: str = "rougeL") -> list[dict[str, Any]]:
    """The rows whose metric covers the whole validation set: an early rung may score ROUGE on a subset
    (evaluation.rung_examples), which neither a curve nor the choice of a best may mix with the rest. A
    rung a trial diverged in scored none (rouge_examples 0, its ROUGE 0): no score; a row without the key
    is from before it was reported, and counts as the whole set."""
    whole = max(((r.get("rouge_examples") or 0) for r in rows), default=0)

    def whole_set(examples: int | None) -> bool:
        return examples is None or (examples > 0 and examples >= whole)

    return [r for r in rows if whole_set(r.get("rouge_examples")) and isinstance(r.get(metric), (int, float))]


def time_to_reach(points: list[tuple[float, float]], target: float | None) -> float | None:
    if target is None:
        return None
    return next((seconds for seconds, value in points if value >= target), None)


def shared_best(plain: list[tuple[float, float]], ours: list[tuple[float, float]]) -> dict[str, Any] | None:
    """The lower of the two arms' best validation ROUGE-L, when each first reached it, and the plain
    script's time over qlora-sweep's (`sooner`). Defined whichever arm's best is higher, where
    `sooner_than_plain` needs qlora-sweep to reach the plain script's best: with 12 trials and 100
    dialogues the two bests differed by 0.007 and 0.013 on seed 0 (2026-12-01, 2026-12-02), the
    plain script's higher both times, so that figure was undefined for a difference of that size."""
    if not plain or not ours:
        return None
    value = min(max(v for _, v in plain), max(v for _, v in ours))
    plain_s, ours_s = time_to_reach(plain, value), time_to_reach(ours, value)
    return {"rougeL": value, "plain_script_s": plain_s, "qlora_sweep_s": ours_s,
            "sooner": plain_s / ours_s if ours_s else None}


def sooner_to_plain_best_values(plain: Path, ours: Path) -> dict[str, Any] | None:
    """When qlora-sweep trained the by-hand arm's best values to the rung where that arm scored its
    best: each arm's time to that trial's score there (seconds since its first trial began), both
    scores, and by hand's time over qlora-sweep's (`sooner`); None where qlora-sweep never trained them
    that far. One seed proposes the same trials to both arms, so both often end on the same values,
    and which arm's score of them is higher is then training's run-to-run spread: on 2026-12-04 three
    qlora-sweep runs of each seed chose by hand's values and scored them 0.3345-0.3362 and 0.3425-0.3481
    on 500 dialogues, by hand 0.3360 and 0.3455, so `sooner_than_plain` (a race to by hand's score) was
    undefined in 3 of the 6 for a difference no search could close. This figure asks when the sweep
    had the adapter by hand ended on, not whether its draw of the noise came out higher."""
    plain_rows, our_rows = rows_of(plain), rows_of(ours)
    if not plain_rows or not our_rows:
        return None
    plain_scored = scored_on_whole_set(plain_rows)
    if not plain_scored:
        return None
    best = max(plain_scored, key=lambda r: (r["rougeL"], -r["timestamp"]))  # the first to reach the best
    key, rung = hyperparameter_key(best["config"]), best["training_iteration"]
    same = [r for r in scored_on_whole_set(our_rows)
            if hyperparameter_key(r["config"]) == key and r["training_iteration"] == rung]
    if not same:
        return None
    mine = min(same, key=lambda r: r["timestamp"])
    plain_s, ours_s = best["timestamp"] - arm_start(plain_rows), mine["timestamp"] - arm_start(our_rows)
    return {"hyperparameters": dict(key), "rung": rung, "plain_script_s": plain_s, "qlora_sweep_s": ours_s,
            "plain_script_rougeL": best["rougeL"], "qlora_sweep_rougeL": mine["rougeL"],
            "sooner": plain_s / ours_s if ours_s > 0 else None}


def same_trials(ours: Path, plain: dict[str, Any]) -> dict[str, Any]:
    """qlora-sweep's figures over its first trials as many as by hand ran, where it ran more: its best and
    time to it, and the race to by hand's best that `sooner_than_plain` runs over all its trials."""
    first = curve_of_rows(first_trials(ours, plain["trials"]))  # the arm's first trial among them: its clock
    reach = time_to_reach(first["points"], plain["best"])
    return {"trials": first["trials"], "best": first["best"], "time_to_best_s": first["time_to_best_s"],
            "time_to_reach_plain_best_s": reach,
            "sooner_than_plain": plain["time_to_best_s"] / reach if reach else None}


LAUNCH_SUFFIX = ".launch.json"  # beside an arm's folder: when its command was launched (time.time())
STARTUP_PARTS = ("startup_imports_s", "startup_data_s", "startup_model_s", "startup_trainer_s")
# the data part's own (reported since 2026-12-04 midday; the rest of it: the generation prompts)
DATA_PARTS = ("startup_data_tokenizer_s", "startup_data_dialogues_s", "startup_data_tokenized_s")


def rung_times(experiment: Path) -> dict[str, Any]:
    """qlora-sweep's wall time per rung (rung_s): the first rung of trials in a fresh worker (cold),
    in a worker kept from an earlier trial (warm), and the later rungs; `parts`: the medians of
    what each was made of (startup, training steps, validation loss and ROUGE; the startup's imports,
    data, model and Trainer), and of its steps' pace (the first step, the median step, and the time
    its steps took beyond the median). `first_rung_cold_since_start_s`: a fresh worker's first rung
    counted from when the driver's Tuner began (its heartbeat's session_started, recorded since
    2026-12-04), so the wait for a worker and any import it made before the trial began are in it
    (rung_s starts when the trial does); Tune's result timestamps are whole seconds.
    `first_rung_cold_since_launch_s`: the same from when the arm's command was launched (its
    LAUNCH_SUFFIX file, written since 2026-12-06), as a user waits for it: Ray's start and the
    driver's preparation in it too, and `tuner_after_launch_s` that part alone. A rung a trial
    diverged in (training.divergence_loss_ratio) ended early and generated nothing: not a rung's time;
    `diverged_rungs` counts them."""
    every_row = rows_of(experiment)
    rows = [r for r in every_row if not r.get("diverged")]

    def median(values: list[float]) -> float | None:
        return statistics.median(values) if values else None

    first = [r for r in rows if r.get("training_iteration") == 1 and r.get("rung_s") is not None]
    later = [r["rung_s"] for r in rows if (r.get("training_iteration") or 0) > 1 and r.get("rung_s") is not None]
    cold = [r["rung_s"] for r in first if not r.get("warm_start")]
    warm = [r["rung_s"] for r in first if r.get("warm_start")]
    later_median = median(later)
    groups = {"first_cold": [r for r in first if not r.get("warm_start")],
              "first_warm": [r for r in first if r.get("warm_start")],
              "later": [r for r in rows if (r.get("training_iteration") or 0) > 1 and r.get("rung_s") is not None]}
    parts = {group: {part: median([r[part] for r in members if r.get(part) is not None])
                     for part in ("rung_s", "train_s", "eval_s", "eval_loss_s", "rouge_s", "step_s_first",
                                  "step_s_median", "train_s_beyond_median")}
             for group, members in groups.items()}
    for group in ("first_cold", "first_warm"):  # the start, and its parts (reported since ac46e28)
        for part in ("startup_s", *STARTUP_PARTS, *DATA_PARTS):
            parts[group][part] = median([r[part] for r in groups[group] if r.get(part) is not None])
    # None: a run from before these were recorded (by hand's arm has no heartbeat)
    session_started = _recorded_time(experiment / DRIVER_HEARTBEAT, "session_started")
    launched = _recorded_time(experiment.with_name(experiment.name + LAUNCH_SUFFIX), "launched")

    def first_cold_since(origin: float | None) -> list[float]:
        return [r["timestamp"] - origin for r in groups["first_cold"] if r.get("timestamp")] if origin else []

    since_start, since_launch = first_cold_since(session_started), first_cold_since(launched)
    return {
        "parts": parts,
        "first_rung_cold_since_launch_s": median(since_launch),
        "tuner_after_launch_s": session_started - launched if session_started and launched else None,
        "first_rung_cold_since_start_s": median(since_start),
        "first_over_later_cold_since_start": median(since_start) / later_median if since_start and later_median
        else None,
        "first_rung_cold_s": median(cold), "first_rung_warm_s": median(warm), "later_rung_s": later_median,
        "startup_cold_s": median([r["startup_s"] for r in first if not r.get("warm_start") and r.get("startup_s")]),
        "startup_warm_s": median([r["startup_s"] for r in first if r.get("warm_start") and r.get("startup_s")]),
        "cold_first_rungs": len(cold), "warm_first_rungs": len(warm), "later_rungs": len(later),
        "diverged_rungs": len(every_row) - len(rows),
        "first_over_later_cold": median(cold) / later_median if cold and later_median else None,
        "first_over_later_warm": median(warm) / later_median if warm and later_median else None,
    }


def _recorded_time(path: Path, key: str) -> float | None:
    """A time (time.time()) a JSON file records under `key`; None where there is none."""
    try:
        return json.loads(path.read_text())[key]
    except (OSError, ValueError, KeyError):
        return None


def hyperparameter_key(values: dict[str, Any]) -> tuple:
    """The values a searcher proposed, as a key both arms' trials of them share."""
    return tuple(sorted((k, round(v, 12) if isinstance(v, float) else v) for k, v in values.items()))


def trials_by_hyperparameters(experiment: Path, diverged: bool = False) -> dict[tuple, dict[int, dict[str, Any]]]:
    """Each trial's rows by rung, keyed by the values its searcher proposed; a rung qlora-sweep's trial
    diverged in is left out (cut short, its ROUGE not measured: nothing to pair) unless `diverged`."""
    trials: dict[tuple, dict[int, dict[str, Any]]] = {}
    for row in rows_of(experiment):
        if row.get("diverged") and not diverged:
            continue
        trials.setdefault(hyperparameter_key(row["config"]), {})[row["training_iteration"]] = row
    return trials


def kept_adapters(experiment: Path) -> dict[tuple, tuple[int, Path, dict[str, Any]]]:
    """Each trial's latest checkpoint still on disk (Tune keeps checkpoints_kept of a trial's, the best
    by the metric), keyed as trials_by_hyperparameters keys them: its rung, its folder and the row
    reported with it."""
    kept: dict[tuple, tuple[int, Path, dict[str, Any]]] = {}
    for trial_folder, rows in rows_by_trial(experiment):
        for row in rows:
            folder = trial_folder / row["checkpoint_dir_name"] if row.get("checkpoint_dir_name") else None
            if folder is None or not folder.is_dir():
                continue
            key = hyperparameter_key(row["config"])
            if key not in kept or row["training_iteration"] > kept[key][0]:
                kept[key] = (row["training_iteration"], folder, row)
    return kept


PAIRED_METRICS = ("rougeL", "train_loss")
RATE_SPLIT = 1e-3  # below it the by-hand arm led 12 of 13 rung-1 pairs on 2026-12-03 (BENCHMARKS.md)


def gap_stats(diffs: list[float]) -> dict[str, Any] | None:
    """qlora-sweep's values minus the by-hand arm's: their mean and how many fell each way."""
    if not diffs:
        return None
    return {"mean_gap": statistics.mean(diffs), "qlora_sweep_lower": sum(d < 0 for d in diffs),
            "qlora_sweep_higher": sum(d > 0 for d in diffs), "compared": len(diffs)}


def same_hyperparameters(plain: Path, ours: Path) -> dict[str, Any]:
    """The trials both arms trained with the same hyperparameters (one seed proposes the same first
    trials to both), compared rung by rung: qlora-sweep's value minus the by-hand arm's, for ROUGE-L
    and the rung's mean training loss (where both report it), over all pairs and split at a learning
    rate of RATE_SPLIT. A rung's ROUGE-L may be scored on different dialogues by the two arms
    (`rouge_examples` says how many each scored); the training loss does not depend on that."""
    theirs, mine = trials_by_hyperparameters(plain), trials_by_hyperparameters(ours)
    pairs = []
    for key in sorted(set(theirs) & set(mine), key=str):
        for rung in sorted(set(theirs[key]) & set(mine[key])):
            a, b = theirs[key][rung], mine[key][rung]
            pairs.append({"hyperparameters": dict(key), "rung": rung,
                          **{f"{side}_{m}": row.get(m) for side, row in (("plain_script", a), ("qlora_sweep", b))
                             for m in (*PAIRED_METRICS, "rouge_examples")}})

    def gaps(group: list[dict[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {"pairs": len(group)}
        for m in PAIRED_METRICS:
            out[m] = gap_stats([p[f"qlora_sweep_{m}"] - p[f"plain_script_{m}"] for p in group
                                if isinstance(p[f"qlora_sweep_{m}"], (int, float))
                                and isinstance(p[f"plain_script_{m}"], (int, float))])
        return out

    by_rung = {}
    for rung in sorted({p["rung"] for p in pairs}):
        group = [p for p in pairs if p["rung"] == rung]
        rates = [(p, p["hyperparameters"].get("learning_rate")) for p in group]  # absent where it was not searched
        by_rung[str(rung)] = {
            **gaps(group),
            f"learning_rate_below_{RATE_SPLIT:g}": gaps([p for p, rate in rates if rate is not None and rate < RATE_SPLIT]),
            f"learning_rate_from_{RATE_SPLIT:g}": gaps([p for p, rate in rates if rate is not None and rate >= RATE_SPLIT]),
            "rouge_examples": {side: sorted({p[f"{side}_rouge_examples"] for p in group} - {None})
                               for side in ("plain_script", "qlora_sweep")},
        }
    return {"by_rung": by_rung, "pairs": pairs}


RESCORED_PAIRS = 4  # a seed's pairs scored again, the latest rungs first (--rescore-pairs)


def rescore_pairs(plain: Path, ours: Path, limit: int = RESCORED_PAIRS) -> list[dict[str, Any]]:
    """Pairs of trials both arms trained alike whose kept adapters are of the same rung (the latest
    rungs first, at most `limit`): both adapters scored on validation again here, in this process,
    which trains nothing, by one evaluator with one config, the qlora-sweep trial's own (its
    plan, prompt and generation, from the record its checkpoint holds).

    Each arm's run scored its trials inside their training processes, the by-hand arm by its own
    generation. With the training losses equal (2026-12-03: within 0.005 from rung 2 on), a gap
    between the two arms' scores that stays here is in the adapters; one that goes away was in the
    scoring during the run. Where the trial trained with Liger's kernels, its adapter is scored once
    more with them put on as its Trainer put them (`rescored_under_liger`), after every other scoring."""
    from trainables.checkpoint_files import TRIAL_RECORD
    from trainables.config import TrialConfig
    from trainables.data import load_dialogues
    from trainables.metrics import BEST_REFERENCE
    from trainables.score_file import score_adapter_on_sets

    theirs, mine = kept_adapters(plain), kept_adapters(ours)
    alike = sorted((key for key in set(theirs) & set(mine) if theirs[key][0] == mine[key][0]),
                   key=lambda key: (-mine[key][0], str(key)))[:limit]
    pairs: list[dict[str, Any]] = []
    trials: dict[tuple, Any] = {}
    validation = None
    for key in alike:
        rung, record_folder, _ = mine[key]
        pair: dict[str, Any] = {"hyperparameters": dict(key), "rung": rung}
        pairs.append(pair)
        try:  # a diagnostic: a pair that cannot be scored again is recorded, and the benchmark goes on
            record = json.loads((record_folder / TRIAL_RECORD).read_text())["trial"]
            trials[key] = trial = TrialConfig.model_validate(record)
            if validation is None:
                split = load_dialogues(trial.data)["validation"]
                validation = (list(split["dialogue"]), [[s] for s in split["summary"]])
            for side, (_, folder, row) in (("plain_script", theirs[key]), ("qlora_sweep", mine[key])):
                scores = score_adapter_on_sets(trial, str(folder), {"validation": validation})["validation"]
                pair[side] = {"in_run": row.get("rougeL"), "in_run_examples": row.get("rouge_examples"),
                              "rescored": scores[BEST_REFERENCE]["rougeL"], "rescored_examples": len(validation[0]),
                              "checkpoint": str(folder.relative_to(folder.parents[2]))}
        except Exception as error:
            pair["error"] = f"{type(error).__name__}: {error}"
            print(f"rescoring rung {rung} {dict(key)} failed: {pair['error']}", flush=True)
            continue
        print(f"rescored rung {rung} {dict(key)}: by hand {pair['plain_script']['in_run']:.4f} in its run, "
              f"{pair['plain_script']['rescored']:.4f} here; qlora-sweep {pair['qlora_sweep']['in_run']:.4f}, "
              f"{pair['qlora_sweep']['rescored']:.4f}", flush=True)
    for pair, key in zip(pairs, alike):  # after every plain scoring: what Liger patches is process-wide
        if "error" in pair or not trials[key].training.liger_kernels:
            continue
        ours_again = pair["qlora_sweep"]
        try:
            ours_again["rescored_under_liger"] = rouge_under_liger(trials[key], mine[key][1], validation)
            print(f"rescored under Liger's kernels {dict(key)}: qlora-sweep {ours_again['rescored_under_liger']:.4f}",
                  flush=True)
        except Exception as error:
            ours_again["rescored_under_liger_error"] = f"{type(error).__name__}: {error}"
            print(f"rescoring under Liger's kernels {dict(key)} failed: {ours_again['rescored_under_liger_error']}",
                  flush=True)
    return pairs


def rouge_under_liger(trial: Any, checkpoint: Path, validation: tuple[list[str], list[list[str]]]) -> float:
    """The adapter's validation ROUGE-L with Liger's kernels put on the model as the trial's Trainer
    puts them (TRL: RoPE, RMSNorm and SwiGLU; its own LM head), what Liger rebinds process-wide in the
    model's modeling module (RoPE among it, which a trial's generation then runs) included, and
    undone afterwards: the one thing a trial's training leaves in its process that a fresh process
    scoring the same adapter with the same config lacks. Until commit 6c1a453 a trial generated
    through them, and this score equalled its in-run one to 1e-16 (2026-12-03, 4 pairs) where the
    fresh process's differed by up to 0.008; since then generation sets them aside
    (trainables.model.own_code_while_generating), so it must equal `rescored`, and so must the
    trial's in-run score."""
    from liger_kernel.transformers import _apply_liger_kernel_to_instance
    from trial_speed import modeling_module_restored

    from trainables.evaluation import RougeEvaluation
    from trainables.export import load_adapted_model
    from trainables.metrics import BEST_REFERENCE
    from trainables.model import use_cudnn_attention
    from trainables.prompt import load_tokenizer

    tokenizer = load_tokenizer(trial.model)
    model = load_adapted_model(trial, str(checkpoint))
    use_cudnn_attention(trial.plan.cudnn_attention)
    base = model.get_base_model()
    with modeling_module_restored(sys.modules[type(base).__module__]):
        _apply_liger_kernel_to_instance(model=base, fused_linear_cross_entropy=False)
        evaluation = RougeEvaluation.for_trial(trial, tokenizer)
        scores = evaluation.rouge_by_rule(model, evaluation.prompts(validation[0]), validation[1])
    return scores[BEST_REFERENCE]["rougeL"]


def rescored_summary(pairs: list[dict[str, Any]]) -> dict[str, Any]:
    """rescore_pairs' pairs summed up: the gap between the arms as each run scored its trials and as
    one evaluator scored both here, by how much each arm's run scored its own trials above this
    evaluator (only where both scored the same number of dialogues), and by how much Liger's kernels
    moved qlora-sweep's adapters' scores here (where its trials trained with them). Pairs whose
    rescoring failed are listed apart, with their error."""
    failed = [p for p in pairs if "error" in p]
    pairs = [p for p in pairs if "error" not in p]

    def own_minus_here(side: str) -> float | None:
        diffs = [p[side]["in_run"] - p[side]["rescored"] for p in pairs
                 if p[side]["in_run"] is not None and p[side]["in_run_examples"] == p[side]["rescored_examples"]]
        return statistics.mean(diffs) if diffs else None

    under_liger = [p["qlora_sweep"]["rescored_under_liger"] - p["qlora_sweep"]["rescored"] for p in pairs
                   if p["qlora_sweep"].get("rescored_under_liger") is not None]
    return {
        "pairs": len(pairs),
        "pairs_failed": [{"hyperparameters": p["hyperparameters"], "rung": p["rung"], "error": p["error"]}
                         for p in failed],
        # qlora-sweep's adapters rescored with Liger's kernels on, as in their trials, minus without
        "qlora_sweep_under_liger_minus_rescored": statistics.mean(under_liger) if under_liger else None,
        "in_run": gap_stats([p["qlora_sweep"]["in_run"] - p["plain_script"]["in_run"] for p in pairs
                             if p["qlora_sweep"]["in_run"] is not None and p["plain_script"]["in_run"] is not None]),
        "rescored": gap_stats([p["qlora_sweep"]["rescored"] - p["plain_script"]["rescored"] for p in pairs]),
        "in_run_minus_rescored": {side: own_minus_here(side) for side in ("plain_script", "qlora_sweep")},
        "pairs_rescored": pairs,
    }


# --- running the arms --------------------------------------------------------------------------

def run_sweep(config: str, overrides: list[str], name: str, storage: Path) -> Path:
    """One arm through qlora-sweep's CLI."""
    return _run([sys.executable, "-m", "search", "run", config, "--set", f"name={name}", "--set", f"storage={storage}"],
                overrides, name, storage)


def run_plain_script(config: str, overrides: list[str], name: str, storage: Path) -> Path:
    """The Ray Tune-by-hand arm."""
    return _run([sys.executable, "benchmarks/plain_ray_tune.py", config, "--name", name, "--storage", str(storage)],
                overrides, name, storage)


def _run(command: list[str], overrides: list[str], name: str, storage: Path) -> Path:
    for override in overrides:
        command += ["--set", override]
    started = time.time()
    (storage / f"{name}{LAUNCH_SUFFIX}").write_text(json.dumps({"launched": started}) + "\n")
    with open(storage / f"{name}.log", "w") as log:
        done = subprocess.run(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{name} failed: see {storage / f'{name}.log'}")
    print(f"{name}: {time.time() - started:.0f} s", flush=True)
    return storage / name


def test_of_sweep(experiment: Path) -> dict[str, Any]:
    """`qlora-sweep best EXPERIMENT --test`: the arm's best adapter on the held-out test dialogues."""
    done = subprocess.run([sys.executable, "-m", "search", "best", str(experiment), "--test", "--json"], cwd=ROOT,
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"best --test on {experiment} failed:\n{done.stderr[-3000:]}")
    summary = json.loads(done.stdout)
    return {**summary["test"], "hyperparameters": summary["hyperparameters"], "checkpoint": summary["checkpoint"]}


def scored_alone(config: str, overrides: list[str], values: dict[str, Any], checkpoint: str | None,
                 splits: tuple[str, ...] = ("validation", "test")) -> dict[str, Any]:
    """An adapter (None: the base model) scored here on `splits` (the validation set, the held-out
    test dialogues), as `best --test` scores them, for a trial with these searched values."""
    from search.packing import TrialPlanner
    from trainables.data import load_dialogues
    from trainables.metrics import BEST_REFERENCE
    from trainables.score_file import score_adapter_on_sets

    trial = TrialPlanner.alone_on_this_machine(load_config(config, overrides)).trial_config(values)
    dialogues = load_dialogues(trial.data)
    sets = {split: (list(dialogues[split]["dialogue"]), [[s] for s in dialogues[split]["summary"]])
            for split in splits}
    scores = score_adapter_on_sets(trial, checkpoint, sets)
    return {split: {**scores[split][BEST_REFERENCE], "examples": len(sets[split][0])} for split in splits}


def best_of_plain_script(experiment: Path, metric: str = "rougeL") -> tuple[dict[str, Any], str]:
    """The plain script's best trial by its own scores on the whole validation set (an early rung's,
    on a subset, may be higher by chance), and the checkpoint it saved with that score."""
    trials = rows_by_trial(experiment)
    row = max(scored_on_whole_set([r for _, rows in trials for r in rows], metric), key=lambda r: r[metric],
              default=None)
    if row is None:
        raise SystemExit(f"{experiment}: no trial scored {metric} on the whole validation set")
    folder = next(folder for folder, rows in trials if any(r is row for r in rows))
    checkpoint = folder / row["checkpoint_dir_name"] if row.get("checkpoint_dir_name") else None
    if checkpoint is None or not checkpoint.is_dir():
        raise SystemExit(f"{experiment}: the best trial's checkpoint for rung {row['training_iteration']} is not on disk")
    return dict(row["config"]), str(checkpoint)


def arm_order(arms: list[str], seed: int) -> list[str]:
    """The arms in the order given, but the two compared for time swap places on odd seeds (A B,
    then B A), so that neither always runs on a GPU warmer than the other's."""
    order = list(arms)
    if seed % 2 and "plain_script" in order and "qlora_sweep" in order:
        i, j = order.index("plain_script"), order.index("qlora_sweep")
        order[i], order[j] = order[j], order[i]
    return order


def warm_up_gpu(seconds: float) -> None:
    """Matrix products for `seconds`: the warm-up of the benchmarks that time one process (first_rung.py,
    shared_determinism.py, gpu_smoke.sh); the sweep benchmark warms up with trials (warm_up, below)."""
    import torch

    if seconds <= 0 or not torch.cuda.is_available():
        return
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    started = time.time()
    while time.time() - started < seconds:
        for _ in range(20):
            a = (a @ a).clamp_(-1, 1)
        torch.cuda.synchronize()
    print(f"GPU warmed up for {time.time() - started:.0f} s", flush=True)


def warm_up(seconds: float, sweep: Any, out: Path) -> None:
    """Untimed load before the first arm: the trials' own work, not matrix products. On a fresh H100
    (2026-12-07, results/2026-12-07-warmup-curve) the GPU ran its matrix products at full rate and its SM
    clock at 1980 MHz from its first second, so what a first arm pays is not the card's clocks. Yet the
    first arm of a job on a fresh machine took longer over its first rung than the same arm later in
    the job in 5 of 6 jobs (median 8-11 % in four of qlora-sweep's, 29 % in by hand's), and only the
    trials' own code touches what they touch first (libraries, kernels, the page cache). So: the config's
    trials at once, training on its model for `seconds` (benchmarks/warmup_curve.py), the curve kept in OUT."""
    import torch

    if seconds <= 0 or not torch.cuda.is_available():  # no card to warm: a CPU run times nothing that needs it
        return
    curve = out / f"warmup-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.mkdir(parents=True, exist_ok=True)
    with curve.with_suffix(".log").open("w") as log:
        done = subprocess.run(warm_up_command(seconds, sweep, curve), stdout=log, stderr=subprocess.STDOUT,
                              env=warm_up_environment(sweep))
    if done.returncode != 0:  # before any arm: nothing is lost, and no arm is timed cold unawares
        raise SystemExit(f"sweep_benchmark: the warm-up failed (exit {done.returncode}): "
                         f"see {curve.with_suffix('.log')}")
    summary = json.loads(curve.read_text()).get("summary", {})
    print(f"warmed up for {seconds:.0f} s with {sweep.search.max_concurrent_trials} trials: "
          f"{summary.get('plateau_tokens_per_s')} tokens/s at the end, the first run "
          f"{summary.get('first_run_share')} of it ({curve.name})", flush=True)


def warm_up_command(seconds: float, sweep: Any, curve: Path) -> list[str]:
    """benchmarks/warmup_curve.py as the config's trials run: as many at once as it allows, on its model
    and data, its micro-batch at its longest max_length, no idle phase."""
    model, longest = str(sweep.model.name_or_path), largest_corner(sweep.search).max_length
    return [sys.executable, str(Path(__file__).with_name("warmup_curve.py")), "--model", model, "--tokenizer", model,
            "--data", str(sweep.data.path), "--trials", str(sweep.search.max_concurrent_trials),
            "--micro-batch-size", str(sweep.training.micro_batch_size),
            "--max-length", str(longest), "--matmul-s", "0", "--load-s", str(seconds), "--idle-s", "0",
            "--after-idle-runs", "0", "--out", str(curve)]


def warm_up_environment(sweep: Any) -> dict[str, str]:
    """This process's environment, with each warm-up trial's CPU threads what Ray gives a trial's worker:
    its CPUs (resources.cpus_per_trial), unless OMP_NUM_THREADS is set already."""
    threads = str(max(1, int(sweep.resources.cpus_per_trial)))
    return {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", threads)}


def run_seed(args: argparse.Namespace, seed: int) -> None:
    folder = args.out.resolve() / f"seed{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    seeded = args.overrides + [f"search.seed={seed}", f"training.seed={seed}"]
    scores_file = folder / "test_scores.json"
    tests: dict[str, Any] = json.loads(scores_file.read_text()) if args.resume and scores_file.is_file() else {}
    ran: set[str] = set()
    for arm in arm_order(args.arms, seed):
        if arm == "zero_shot":
            zero_shot_once(args, seeded, folder)
            continue
        name = f"{FOLDERS[arm]}-s{seed}"
        if not arm_to_run(folder, arm, name, tests, args.rerun):
            continue
        scores_file.write_text(json.dumps(tests, indent=2))  # an earlier score set aside stays on record
        arm_overrides = seeded + {"recipe": RECIPE, "levers_off": LEVERS_OFF}.get(arm, [])
        if arm == "qlora_sweep" and args.sweep_trials:
            arm_overrides = arm_overrides + [f"search.num_trials={args.sweep_trials}"]
        if arm == "plain_script":
            experiment = run_plain_script(args.config, arm_overrides, name, folder)
            values, checkpoint = best_of_plain_script(experiment)
            # validation too: the script's own generation picked this best; qlora-sweep's evaluator,
            # which scored every qlora-sweep trial, says whether the two bests compare
            scored = scored_alone(args.config, arm_overrides, values, checkpoint)
            tests[arm] = {**scored["test"], "validation_rougeL": scored["validation"]["rougeL"],
                          "hyperparameters": values}
        else:
            experiment = run_sweep(args.config, arm_overrides, name, folder)
            tests[arm] = test_of_sweep(experiment)
        tests[arm]["search"] = searched_space(args.config, arm_overrides)
        scores_file.write_text(json.dumps(tests, indent=2))
        ran.add(arm)
    plain, ours = folder / f"{FOLDERS['plain_script']}-s{seed}", folder / f"{FOLDERS['qlora_sweep']}-s{seed}"
    if (args.rescore_pairs and ran & {"plain_script", "qlora_sweep"} and any(plain.glob("*/result.json"))
            and any(ours.glob("*/result.json"))):
        # the adapters are on this disk only now: a committed run keeps no checkpoints
        (folder / "rescored_pairs.json").write_text(json.dumps(rescore_pairs(plain, ours, args.rescore_pairs),
                                                               indent=2))


def searched_space(config: str, overrides: list[str]) -> dict[str, Any]:
    """The search section an arm ran with (its seed aside, which both arms of a seed share): the
    two searching arms compare only when theirs are equal (a --rerun after the space changed
    must run both)."""
    return {name: value for name, value in load_config(config, overrides).search.model_dump(mode="json").items()
            if name != "seed"}


def spaces_differ(tests: dict[str, Any]) -> dict[str, Any]:
    """{setting: [by hand's, qlora-sweep's]} where the two searching arms' recorded search sections
    differ; {"unrecorded": arm} where only one arm's is on record (the other ran before sections were
    recorded, so nothing says it searched the same space); empty where they agree or neither is recorded."""
    plain, ours = (tests.get(arm, {}).get("search") for arm in ("plain_script", "qlora_sweep"))
    if plain is None and ours is None:
        return {}
    if plain is None or ours is None:
        return {"unrecorded": "plain_script" if plain is None else "qlora_sweep"}
    # a setting recorded by one arm only came after the other's run, which ran at its default
    defaults = SearchConfig.model_construct().model_dump(mode="json")
    plain, ours = ({**{n: defaults[n] for n in set(plain) ^ set(ours) if n in defaults}, **recorded}
                   for recorded in (plain, ours))
    # how many trials an arm ran is not its space: qlora-sweep may run more (--sweep-trials) and is then
    # also timed over its first trials as many as by hand's (the summary's same_trials)
    return {name: [plain.get(name), ours.get(name)] for name in sorted(set(plain) | set(ours))
            if name != "num_trials" and plain.get(name) != ours.get(name)}


def describe_spaces(differ: dict[str, Any]) -> str:
    if "unrecorded" in differ:
        return f"{differ['unrecorded']}'s search space is not on record (run it again: --rerun)"
    settings = "; ".join(f"{name}: by hand {json.dumps(plain)}, qlora-sweep {json.dumps(ours)}"
                         for name, (plain, ours) in differ.items())
    return f"the searching arms ran different spaces ({settings})"


def zero_shot_once(args: argparse.Namespace, seeded: list[str], folder: Path) -> None:
    """The base model's scores. They do not depend on the seed (greedy generation; the split
    follows data.seed, which the seeds leave alone), so a seed folder of OUT that has them lends them."""
    found = sorted(args.out.resolve().glob("seed*/zero_shot.json"))
    if found and found[0].parent != folder:
        (folder / "zero_shot.json").write_text(found[0].read_text())
        print(f"zero_shot: taken from {found[0].parent.name}", flush=True)
    elif not found:
        (folder / "zero_shot.json").write_text(json.dumps(scored_alone(args.config, seeded, RECIPE_VALUES, None),
                                                          indent=2))
        print(f"zero_shot: scored into {folder.name}", flush=True)


def arm_to_run(folder: Path, arm: str, name: str, tests: dict[str, Any], rerun: list[str]) -> bool:
    """Whether `arm` runs now, its earlier run in `folder` set aside first (renamed, never deleted):
    one with its test score is kept (--resume) unless --rerun names the arm, which sets it aside
    as `<name>.earlier-<time>`, its score in `tests` under that name; one without is a run that
    was cut, set aside as `<name>.cut-<time>`."""
    earlier = folder / name
    if arm in tests and arm not in rerun:
        print(f"{name}: kept from an earlier run (--resume)", flush=True)
        return False
    scored = arm in tests
    if earlier.exists():
        aside = earlier.with_name(f"{name}.{'earlier' if scored else 'cut'}-{time.strftime('%H%M%S')}")
        earlier.rename(aside)
        if scored:
            tests[aside.name] = tests.pop(arm)
        print(f"{name}: its earlier run was {'run again (--rerun)' if scored else 'cut'}; set aside as {aside.name}",
              flush=True)
    return True


# --- the summary -------------------------------------------------------------------------------

def summarize(out: Path, seed: int, gpus: int) -> dict[str, Any]:
    folder = out / f"seed{seed}"
    tests = json.loads((folder / "test_scores.json").read_text()) if (folder / "test_scores.json").is_file() else {}
    zero = json.loads((folder / "zero_shot.json").read_text()) if (folder / "zero_shot.json").is_file() else None
    arms: dict[str, Any] = {}
    for arm, prefix in FOLDERS.items():
        experiment = folder / f"{prefix}-s{seed}"
        if not any(experiment.glob("*/result.json")):
            continue
        arms[arm] = curve(experiment)
        arms[arm]["gpu_hours"] = arms[arm]["wall_s"] * gpus / 3600
        arms[arm]["test_rougeL"] = tests.get(arm, {}).get("rougeL")
        arms[arm]["best_hyperparameters"] = tests.get(arm, {}).get("hyperparameters")
        if "validation_rougeL" in tests.get(arm, {}):  # the plain script's best, scored as qlora-sweep scores
            arms[arm]["best_rescored"] = tests[arm]["validation_rougeL"]
    summary: dict[str, Any] = {"seed": seed, "protocol": PROTOCOL, "zero_shot": zero, **arms}
    plain, ours = arms.get("plain_script"), arms.get("qlora_sweep")
    if ours:
        summary["qlora_sweep"]["rung_times"] = rung_times(folder / f"qlora-sweep-s{seed}")
    if plain and ours:
        differ = spaces_differ(tests)
        if differ:  # one arm run again on another space: a time to the other's best would compare two searches
            summary["search_spaces_differ"] = differ
            summary["sooner_than_plain"] = None
        else:
            reach = time_to_reach(ours["points"], plain["best"])
            ours["time_to_reach_plain_best_s"] = reach
            summary["sooner_than_plain"] = plain["time_to_best_s"] / reach if reach else None
            summary["shared_best"] = shared_best(plain["points"], ours["points"])
            summary["sooner_to_plain_best_values"] = sooner_to_plain_best_values(
                folder / f"plain-script-s{seed}", folder / f"qlora-sweep-s{seed}")
            if ours["trials"] > plain["trials"]:
                summary["same_trials"] = same_trials(folder / f"qlora-sweep-s{seed}", plain)
        # values both arms trained compare whatever else each searched
        summary["same_hyperparameters"] = same_hyperparameters(folder / f"plain-script-s{seed}",
                                                               folder / f"qlora-sweep-s{seed}")
        if (folder / "rescored_pairs.json").is_file():
            summary["same_hyperparameters"]["rescored"] = rescored_summary(
                json.loads((folder / "rescored_pairs.json").read_text()))
    recipe = arms.get("recipe")
    if recipe and ours and recipe.get("test_rougeL") is not None and ours.get("test_rougeL") is not None:
        summary["test_rougeL_over_recipe_points"] = 100 * (ours["test_rougeL"] - recipe["test_rougeL"])
    return summary


def plot(summaries: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7.5, 4.2))
    styles = {"plain_script": ("--", "Ray Tune by hand"), "levers_off": (":", "qlora-sweep, levers off"),
              "recipe": ("-.", "recipe (one trial)"), "qlora_sweep": ("-", "qlora-sweep")}
    for summary in summaries:
        for key, (style, label) in styles.items():
            arm = summary.get(key)
            if arm and arm["points"]:
                xs = [p[0] / 60 for p in arm["points"]] + [arm["wall_s"] / 60]
                ys = [p[1] for p in arm["points"]] + [arm["points"][-1][1]]
                axes.step(xs, ys, style, where="post", label=f"{label}, seed {summary['seed']}")
        zero = summary.get("zero_shot")
        if zero and zero.get("validation"):
            axes.axhline(zero["validation"]["rougeL"], color="grey", lw=0.8)
    axes.set_xlabel("wall time since the arm's first trial began (minutes)")
    axes.set_ylabel("best validation ROUGE-L so far")
    axes.set_title("grey line: zero-shot", fontsize=9)
    axes.legend(fontsize=7)
    axes.grid(alpha=0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def gpus_in_cluster() -> int:
    try:
        import torch

        return torch.cuda.device_count()
    except ImportError:
        return 0


def seeds_found(out: Path) -> list[int]:
    return sorted(int(p.name[4:]) for p in out.glob("seed*") if p.name[4:].isdigit())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("--seeds", type=int, nargs="+",
                        help="the seeds to run (default: 0 1); the summary covers every seed in OUT")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--plot", type=Path, help="default: OUT/sweep_curves.png")
    parser.add_argument("--arms", nargs="+", choices=ARMS, default=list(DEFAULT_ARMS))
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--analyze-only", action="store_true")
    parser.add_argument("--gpus", type=int, help="GPUs in the cluster, for GPU-hours (default: this machine's)")
    parser.add_argument("--warmup-s", type=float, default=60,
                        help="untimed load before the first arm: the config's trials training at once (GPU only)")
    parser.add_argument("--resume", action="store_true", help="keep the arms OUT already holds with their test "
                        "scores (a chain cut short, or seeds run in different sessions); rerun the others")
    parser.add_argument("--rerun", nargs="+", choices=ARMS, default=[], help="with --resume: run these arms again "
                        "where OUT holds them (a change to measure in place); the earlier runs are set aside, renamed")
    parser.add_argument("--sweep-trials", type=int, help="trials qlora-sweep's arm proposes (default: the config's "
                        "search.num_trials, as by hand's): more to let it search on in the time it saves; the summary "
                        "then also gives its figures over its first trials as many as by hand's (same_trials)")
    parser.add_argument("--rescore-pairs", type=int, default=RESCORED_PAIRS,
                        help=f"pairs of trials both searching arms trained alike whose adapters are scored again "
                        f"on the whole validation set after them (default {RESCORED_PAIRS}; 0: none): each pair "
                        "costs two model loads and two passes over it")
    args = parser.parse_args(argv)
    if args.rescore_pairs < 0:
        parser.error(f"--rescore-pairs {args.rescore_pairs}: 0 (none) or more")
    if args.sweep_trials is not None and args.sweep_trials < 1:
        parser.error(f"--sweep-trials {args.sweep_trials}: 1 or more")
    if args.rerun and not args.resume:
        parser.error("--rerun runs arms again inside an OUT that --resume continues: add --resume")
    gpus = args.gpus if args.gpus is not None else gpus_in_cluster()
    sweep = load_config(args.config, args.overrides)  # a bad config fails here, before anything runs
    if not sweep.data.test_examples:
        parser.error("the config holds out no test dialogues: set data.test_examples (e.g. 500)")
    if not args.analyze_only:
        warm_up(args.warmup_s, sweep, args.out)
        for seed in args.seeds if args.seeds is not None else [0, 1]:
            run_seed(args, seed)
    # Every seed OUT holds, not only those run now: seeds run in different sessions share one summary
    summaries = [summarize(args.out, seed, gpus) for seed in seeds_found(args.out)]
    (args.out / "summary.json").write_text(json.dumps(summaries, indent=2))
    plot(summaries, args.plot or args.out / "sweep_curves.png")
    for s in summaries:
        print(f"seed {s['seed']}: " + "; ".join(
            f"{arm} best {s[arm]['best']:.4f} at {s[arm]['time_to_best_s']:.0f} s, test {s[arm]['test_rougeL']}"
            for arm in FOLDERS if s.get(arm) and s[arm]["best"] is not None)
            + (f"; not compared: {describe_spaces(s['search_spaces_differ'])}" if s.get("search_spaces_differ")
               else f"; {s['sooner_than_plain']:.2f}x sooner than plain" if s.get("sooner_than_plain")
               else "; qlora-sweep never reached plain's best")
            + (f" ({s['shared_best']['sooner']:.2f}x at the shared best, {s['shared_best']['rougeL']:.4f})"
               if (s.get("shared_best") or {}).get("sooner") else "")
            + (f"; {s['sooner_to_plain_best_values']['sooner']:.2f}x sooner to plain's best values"
               if (s.get("sooner_to_plain_best_values") or {}).get("sooner") else "")
            + (f"; over its first {s['same_trials']['trials']} trials best {s['same_trials']['best']:.4f}, "
               + (f"{s['same_trials']['sooner_than_plain']:.2f}x sooner than plain"
                  if s["same_trials"]["sooner_than_plain"] else "plain's best not reached")
               if (s.get("same_trials") or {}).get("best") is not None else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
