"""Checks that need more than the config file: the model's files and tokenizer, and the data.

Run by `validate`, and by `run` while Ray starts (before any trial), so a bad sweep fails in
seconds with one line instead of in every trial. Loads a tokenizer and the data, never model
weights. Imported only after search.hub has decided whether the hub can be reached: datasets reads
that decision at import.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

from search.config import SweepConfig, param_values
from search.models import is_unfetched_builtin
from trainables.data import describe_problems, exception_reason, load_dialogues
from trainables.errors import ConfigError
from trainables.prompt import encode_example, load_tokenizer, scaffolding_length

FIT_SAMPLE = 200  # training examples checked for fitting at the smallest max_length


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
    check_model_source(sweep.model.name_or_path)
    try:
        return load_tokenizer(sweep.model)
    except Exception as exc:
        reason = exception_reason(exc)
        if Path(sweep.model.name_or_path).is_absolute():
            where = "this folder"
        elif offline_reason:
            where = f"this hub id: it is not in the local Hugging Face cache and {offline_reason}; give a local folder"
            reason = ""
        else:
            where = "this hub id"
        detail = f": {reason}" if reason else ""
        raise ConfigError(f"model.name_or_path {sweep.model.name_or_path}: tokenizer cannot be loaded from {where}{detail}") from None


def check_sweep(sweep: SweepConfig, offline_reason: str | None = None) -> DataSummary:
    """Raise ConfigError naming the problem, or describe the data that trials will see.
    `offline_reason`: why the hub cannot be reached (search.hub), for a hub id's error message."""
    if is_unfetched_builtin(sweep.model.name_or_path):  # validate, before run has fetched it: the data alone
        dialogues = load_dialogues(sweep.data)
        return DataSummary(len(dialogues["train"]), len(dialogues["validation"]), None, "not checked",
                           describe_problems(dialogues["problems"]), _count(dialogues["test"]))
    tokenizer = load_checked_tokenizer(sweep, offline_reason)
    dialogues = load_dialogues(sweep.data)
    scaffolding = scaffolding_length(tokenizer, sweep.prompt)
    shortest = int(min(param_values(sweep.search.max_length)))
    if shortest <= scaffolding:
        raise ConfigError(
            f"search.max_length: {shortest} tokens is not longer than the prompt scaffolding "
            f"({scaffolding} tokens with this tokenizer); raise it"
        )
    sample = dialogues["train"].select(range(min(FIT_SAMPLE, len(dialogues["train"]))))
    fitting = sum(
        encode_example(tokenizer, sweep.prompt, d or "", s or "", shortest) is not None
        for d, s in zip(sample["dialogue"], sample["summary"])
    )
    if fitting == 0:
        raise ConfigError(
            f"search.max_length: at {shortest} tokens none of the first {len(sample)} training summaries fit "
            "after the prompt; raise it"
        )
    return DataSummary(
        train_examples=len(dialogues["train"]),
        validation_examples=len(dialogues["validation"]),
        scaffolding_tokens=scaffolding,
        fitting_at_min_length=f"{fitting}/{len(sample)}",
        bad_rows=describe_problems(dialogues["problems"]),
        test_examples=_count(dialogues["test"]),
    )


def check_sweep_in_background(sweep: SweepConfig,
                              offline_reason: str | None = None) -> Callable[[], DataSummary]:
    """check_sweep in a thread of its own, started now; the callable returned waits for it and gives
    its DataSummary or raises its error. `run` starts Ray meanwhile: the checks (a tokenizer, whose
    library import is most of their 5-7 s, and the data) and Ray's start (about 5 s) each wait on
    different things, so a sweep starts in the longer of the two instead of their sum."""
    checked: Future = Future()

    def check() -> None:
        try:
            checked.set_result(check_sweep(sweep, offline_reason))
        except BaseException as error:  # noqa: B036 - handed to whoever waits, as it was raised
            checked.set_exception(error)

    threading.Thread(target=check, name="qlora-sweep-checks", daemon=True).start()
    return checked.result


def _count(split) -> int:
    return 0 if split is None else len(split)
