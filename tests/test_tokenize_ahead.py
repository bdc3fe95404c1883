"""`run`'s background thread, after the checks, tokenizes the data ahead of the trials into datasets'
cache (search.checks.check_sweep_in_background); a trial planned from the same sweep loads those files."""

import os
import shutil
import subprocess
import sys

import datasets
import pytest

from search.checks import check_sweep_in_background, max_lengths_ahead
from search.config import SweepConfig
from search.packing import TrialPlanner
from tests.conftest import tiny_sweep_dict
from tests.helpers import ROOT

pytestmark = pytest.mark.unit

TRIAL_DATA = (  # what trainables.trial.run_trial does with its data, for each trial, in a process of their own
    "import json, os, sys; from trainables.config import TrialConfig; "
    "from trainables.data import load_dialogues, tokenize_for_training, validation_for_loss; "
    "from trainables.prompt import load_tokenizer; "
    "trials = [TrialConfig.model_validate_json(line) for line in sys.stdin.read().splitlines()]; "
    "[print(c['filename'], os.stat(c['filename']).st_mtime_ns) for trial in trials "
    "for d, t in [(load_dialogues(trial.data), load_tokenizer(trial.model))] "
    "for rows in (d['train'], "
    "validation_for_loss(d['validation'], trial.evaluation, trial.max_rungs, trial.data.seed)) "
    "for c in tokenize_for_training(rows, t, trial.prompt, trial.hyperparameters.max_length, "
    "trial.data.reuse_tokenized).cache_files]"
)


def _sweep(tiny_model_path, tmp_path, **data) -> SweepConfig:
    folder = tmp_path / "data"  # a fresh copy: no test before this one has tokenized it
    shutil.copytree(ROOT / "trainables" / "samples", folder)
    return SweepConfig.model_validate(tiny_sweep_dict(tiny_model_path, tmp_path / "results",
                                                      data={"path": str(folder), **data}))


def test_a_trial_loads_the_tokenized_data_the_driver_wrote_ahead_at_each_listed_max_length(tiny_model_path,
                                                                                          tmp_path):
    sweep = _sweep(tiny_model_path, tmp_path)
    checks = check_sweep_in_background(sweep)
    assert checks().train_examples == 64
    ahead = checks.tokenized.result(timeout=120)
    written = {file: os.stat(file).st_mtime_ns for file in ahead}
    assert max_lengths_ahead(sweep) == [160, 192] and len(written) >= 4  # 2 lengths x train, validation
    assert all(str(tmp_path / "data") not in file for file in written)  # datasets' cache, not the data folder

    planner = TrialPlanner.for_cluster(sweep, None)
    # as JSON, not pickled as Ray hands them: the cache key must not depend on how a config was made
    trials = [planner.trial_config({"lora_r": 2, "lora_alpha": 4, "learning_rate": 1e-3, "max_length": length})
              for length in (160, 192)]
    assert trials[0].evaluation.loss_examples == "first_rung"  # the loss on rung 1's 2 dialogues, cached too
    done = subprocess.run([sys.executable, "-c", TRIAL_DATA], input="\n".join(t.model_dump_json() for t in trials),
                          cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HF_DATASETS_CACHE": str(datasets.config.HF_DATASETS_CACHE)})
    assert done.returncode == 0, done.stderr[-2000:]
    loaded = dict(line.rsplit(" ", 1) for line in done.stdout.splitlines())
    assert len(loaded) == len(written)  # each length's train and validation copies, all of them
    assert {file: int(mtime) for file, mtime in loaded.items()} == written  # the very files, none written again


def test_nothing_is_tokenized_ahead_where_trials_would_not_reuse_it_or_lengths_are_drawn(tiny_model_path, tmp_path):
    unshared = _sweep(tiny_model_path, tmp_path, reuse_tokenized=False)
    checks = check_sweep_in_background(unshared)
    checks()
    assert checks.tokenized.result(timeout=120) == []
    drawn = tiny_sweep_dict(tiny_model_path, tmp_path, search={"max_length": {"low": 160, "high": 256}})
    assert max_lengths_ahead(SweepConfig.model_validate(drawn)) == []
    fixed = tiny_sweep_dict(tiny_model_path, tmp_path, search={"max_length": 192})
    assert max_lengths_ahead(SweepConfig.model_validate(fixed)) == [192]


def test_the_files_tokenized_over_threads_are_the_ones_a_trial_on_one_thread_loads(tiny_tokenizer, tmp_path):
    from datasets import Dataset

    from trainables.config import PromptConfig
    from trainables.data import tokenize_ahead, tokenize_for_training
    from trainables.prompt import MIN_TEXTS_PER_THREAD

    count = 3 * MIN_TEXTS_PER_THREAD + 1  # a batch the driver's 3 threads split
    rows = Dataset.from_list([{"dialogue": f"#Person1#: hello {n}.\n#Person2#: hi {n}.", "summary": f"Greetings {n}."}
                              for n in range(count)]).flatten_indices(cache_file_name=str(tmp_path / "rows.arrow"))
    ahead = tokenize_ahead({"train": rows}, tiny_tokenizer, PromptConfig(), [160], threads=3)
    written = {file: os.stat(file).st_mtime_ns for file in ahead}
    assert written and all(str(tmp_path) in file for file in written)  # the rows, and the filter's indices
    trial = tokenize_for_training(rows, tiny_tokenizer, PromptConfig(), 160)  # no threads asked: one
    assert {c["filename"]: os.stat(c["filename"]).st_mtime_ns for c in trial.cache_files} == written
    assert len(trial) == count
