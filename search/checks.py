"""Checks that need more than the config file: the model's files and tokenizer, and the data.

Run by `validate`, and by `run` while Ray starts (before any trial), so a bad sweep fails in
seconds with one line instead of in every trial. Loads a tokenizer and the data, never model
weights. Imported only after search.hub has decided whether the hub can be reached: datasets reads
that decision at import.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from concurrent.futures import Future, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from huggingface_hub.constants import HF_HUB_CACHE
from huggingface_hub.file_download import repo_folder_name

from search.config import Range, SweepConfig, param_values
from search.models import is_unfetched_builtin
from trainables.data import describe_problems, exception_reason, load_dialogues, tokenize_ahead, validation_for_loss
from trainables.errors import ConfigError
from trainables.prompt import encode_examples, load_tokenizer, scaffolding_length

FIT_SAMPLE = 200  # training (and loss) examples checked for fitting at the smallest max_length
# At the driver's exit, how long an unfinished tokenize-ahead is waited for: a sweep is over long after
# it ends, but one refused at its start should not wait; datasets writes each copy to a temporary file
# first, so one cut off leaves no half-written copy for a later trial to find
TOKENIZE_AHEAD_WAIT_S = 10

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DataSummary:
    train_examples: int
    validation_examples: int
    scaffolding_tokens: int | None  # None: not counted (the model's tokenizer is not there yet)
    fitting_at_min_length: str
    bad_rows: str  # "" when every row was usable
    test_examples: int = 0  # held out of train (data.test_examples)


def check_model_source(name_or_path: str) -> None:
    path = Path(name_or_path)
    if path.is_absolute():
        if not path.exists():
            hint = " (run `qlora-sweep fetch-model` to create it)" if "qlora-sweep" in str(path) else ""
            raise ConfigError(f"model.name_or_path {path} does not exist{hint}")
        if not (path / "config.json").is_file():
            raise ConfigError(
                f"model.name_or_path {path}: no config.json (expected a Hugging Face model folder; "
                "for the SmolLM2 GGUF run `qlora-sweep fetch-model`)"
            )


def load_checked_tokenizer(sweep: SweepConfig, offline_reason: str | None = None):
    name = sweep.model.name_or_path
    check_model_source(name)
    hub_id = not Path(name).is_absolute()
    not_cached = (f"model.name_or_path {name}: tokenizer cannot be loaded from this hub id: it is not in the local "
                  f"Hugging Face cache and {offline_reason}; give a local folder")
    if offline_reason and hub_id and not hub_model_cached(name):
        raise ConfigError(not_cached)  # at once: loading the tokenizer would first import transformers and torch
    try:
        return load_tokenizer(sweep.model)
    except Exception as exc:
        if offline_reason and hub_id:
            raise ConfigError(not_cached) from None
        where = "this hub id" if hub_id else "this folder"
        reason = exception_reason(exc)
        detail = f": {reason}" if reason else ""
        raise ConfigError(f"model.name_or_path {name}: tokenizer cannot be loaded from {where}{detail}") from None


def hub_model_cached(repo_id: str) -> bool:
    """Whether the local Hugging Face cache holds any snapshot of this model repo; without one, a load that
    may look only there cannot succeed."""
    snapshots = Path(HF_HUB_CACHE) / repo_folder_name(repo_id=repo_id, repo_type="model") / "snapshots"
    return snapshots.is_dir() and any(snapshots.iterdir())


def check_sweep(sweep: SweepConfig, offline_reason: str | None = None) -> DataSummary:
    """Raise ConfigError naming the problem, or describe the data that trials will see.
    `offline_reason`: why the hub cannot be reached (search.hub), for a hub id's error message."""
    return _checked_inputs(sweep, offline_reason)[0]


def _checked_inputs(sweep: SweepConfig,
                    offline_reason: str | None) -> tuple[DataSummary, Any, dict[str, Any]]:
    """check_sweep's summary, with the tokenizer (None where the model is not fetched yet) and what
    each trial tokenizes of the dialogues it loaded (trained_on)."""
    if is_unfetched_builtin(sweep.model.name_or_path):  # validate, before run has fetched it: the data alone
        dialogues = load_dialogues(sweep.data)
        summary = DataSummary(len(dialogues["train"]), len(dialogues["validation"]), None, "not checked",
                              describe_problems(dialogues["problems"]), _count(dialogues["test"]))
        return summary, None, trained_on(sweep, dialogues)
    tokenizer = load_checked_tokenizer(sweep, offline_reason)
    dialogues = load_dialogues(sweep.data)
    rows = trained_on(sweep, dialogues)
    scaffolding = scaffolding_length(tokenizer, sweep.prompt)
    shortest = int(min(param_values(sweep.search.max_length)))
    if shortest <= scaffolding:
        raise ConfigError(
            f"search.max_length: {shortest} tokens is not longer than the prompt scaffolding "
            f"({scaffolding} tokens with this tokenizer); raise it"
        )
    fitting, sampled = _fitting(rows["train"], tokenizer, sweep.prompt, shortest)
    if fitting == 0:
        raise ConfigError(
            f"search.max_length: at {shortest} tokens none of the first {sampled} training summaries fit "
            "after the prompt; raise it"
        )
    # A validation loss over no dialogue is NaN at every rung, silently, and eval_loss may be what ranks
    loss_rows = rows["validation"]
    loss_fitting, loss_sampled = _fitting(loss_rows, tokenizer, sweep.prompt, shortest)
    if loss_fitting == 0:
        which = "the" if loss_sampled == len(loss_rows) else f"the first {loss_sampled} of the"
        raise ConfigError(
            f"search.max_length: at {shortest} tokens none of {which} {len(loss_rows)} validation summaries the loss "
            "covers (evaluation.loss_examples) fit after the prompt; raise it"
        )
    return DataSummary(
        train_examples=len(dialogues["train"]),
        validation_examples=len(dialogues["validation"]),
        scaffolding_tokens=scaffolding,
        fitting_at_min_length=f"{fitting}/{sampled}",
        bad_rows=describe_problems(dialogues["problems"]),
        test_examples=_count(dialogues["test"]),
    ), tokenizer, rows


def _fitting(rows: Any, tokenizer: Any, prompt: Any, max_length: int) -> tuple[int, int]:
    """How many of the first FIT_SAMPLE of `rows` fit `max_length` tokens with their whole summary, of how many."""
    sample = rows.select(range(min(FIT_SAMPLE, len(rows))))
    encoded = encode_examples(tokenizer, prompt, [d or "" for d in sample["dialogue"]],
                              [s or "" for s in sample["summary"]], max_length)
    return sum(example is not None for example in encoded), len(sample)


class BackgroundChecks:
    """check_sweep, running in a thread of its own; calling this waits for it and gives its
    DataSummary or raises its error. After the checks the same thread tokenizes the data ahead of
    the trials (`tokenized`: the cache files; see check_sweep_in_background)."""

    def __init__(self) -> None:
        self.summary: Future = Future()
        self.tokenized: Future = Future()

    def __call__(self) -> DataSummary:
        return self.summary.result()


def check_sweep_in_background(sweep: SweepConfig, offline_reason: str | None = None) -> BackgroundChecks:
    """check_sweep in a thread of its own, started now. `run` starts Ray meanwhile: the checks (a
    tokenizer, whose library import is most of their 5-7 s, and the data) and Ray's start (about 5 s)
    each wait on different things, so a sweep starts in the longer of the two instead of their sum.

    Then, while the first trials' workers import their libraries (12-16 s on the H200 sweeps of
    2026-12-04, where a fresh worker's data part fell from 16.5 s to 1.0-1.2 s with this), the thread
    tokenizes the data at each max_length the search lists into datasets' cache on this node, where
    those trials find it (data.reuse_tokenized); a trial that gets there first tokenizes for itself,
    as before. The driver waits a little for it at exit (TOKENIZE_AHEAD_WAIT_S)."""
    checks = BackgroundChecks()

    def check_then_tokenize() -> None:
        try:
            summary, tokenizer, rows = _checked_inputs(sweep, offline_reason)
        except BaseException as error:  # noqa: B036 - handed to whoever waits, as it was raised
            checks.summary.set_exception(error)
            checks.tokenized.set_result([])
            return
        checks.summary.set_result(summary)
        lengths = max_lengths_ahead(sweep) if tokenizer is not None and sweep.data.reuse_tokenized else []
        try:
            began = time.perf_counter()
            checks.tokenized.set_result(tokenize_ahead(rows, tokenizer, sweep.prompt, lengths, threads=ahead_threads()))
            logger.debug("tokenized ahead of the trials at max_length %s in %.1f s", lengths,
                         time.perf_counter() - began)
        except Exception as error:  # an optimization only: the trials tokenize for themselves
            logger.warning("tokenizing ahead of the trials failed (%s); each trial tokenizes its data itself",
                           exception_reason(error))
            checks.tokenized.set_result([])

    threading.Thread(target=check_then_tokenize, name="qlora-sweep-checks", daemon=True).start()
    atexit.register(wait, [checks.tokenized], TOKENIZE_AHEAD_WAIT_S)
    return checks


def ahead_threads() -> int:
    """Threads the driver tokenizes ahead with: half this machine's CPUs, since the first trials' workers
    meanwhile import their libraries, one core each. On the H200's 16 cores (2026-12-05, gpu-config) the
    driver, tokenizing on one, finished max_length 384 in time but not 512, and the four trials at 512
    each tokenized for themselves, 6.8-6.9 s of their first rung against 0.06 s at 384."""
    return max(1, (os.cpu_count() or 1) // 2)


def trained_on(sweep: SweepConfig, dialogues: dict[str, Any]) -> dict[str, Any]:
    """What each trial tokenizes: the training split, and the validation dialogues its loss covers."""
    evaluation = sweep.evaluation.deciding_loss_examples(sweep.scheduler.metric)
    return {"train": dialogues["train"], "validation": validation_for_loss(
        dialogues["validation"], evaluation, sweep.scheduler.max_rungs, sweep.data.seed)}


def max_lengths_ahead(sweep: SweepConfig) -> list[int]:
    """The max_lengths trials will tokenize at: the listed choices, or the fixed value; none for a
    range, whose draws are not known ahead."""
    param = sweep.search.max_length
    if isinstance(param, Range):
        return []
    return list(dict.fromkeys(int(value) for value in param_values(param)))  # as listed, once each


def _count(split) -> int:
    return 0 if split is None else len(split)
