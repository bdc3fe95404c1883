"""Checks that need more than the config file: the model's files and tokenizer, and the data.

Run by `validate` and before `run` starts Ray, so a bad sweep fails in seconds with one line
instead of in every trial. Loads a tokenizer and the data, never model weights.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from search.config import ConfigError, SweepConfig, param_values

FIT_SAMPLE = 200  # training examples checked for fitting at the smallest max_length


@dataclass(frozen=True)
class DataSummary:
    train_examples: int
    validation_examples: int
    scaffolding_tokens: int
    fitting_at_min_length: str
    bad_rows: str  # "" when every row was usable


def hub_unreachable() -> str | None:
    """Why the Hugging Face hub can't be used, or None. A 3 s probe, instead of the hub client's
    ~50 s of retries before it says the same."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return "HF_HUB_OFFLINE is set"
    host = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co").hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=3).close()
    except OSError as exc:
        return f"{host} is unreachable: {exc.strerror or exc}"
    return None


def prefer_local_cache_when_offline(sweep: SweepConfig) -> str | None:
    """With a hub id in the config and no hub, look only in the local Hugging Face cache.

    Must run before transformers or datasets is imported: they read HF_HUB_OFFLINE once, at
    import. Ray workers started from this process inherit it.
    """
    uses_hub = not Path(sweep.model.name_or_path).is_absolute() or (
        sweep.data.path is not None and not Path(sweep.data.path).is_absolute()
    )
    reason = hub_unreachable() if uses_hub else None
    if reason:
        os.environ["HF_HUB_OFFLINE"] = "1"
    return reason


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
    from trainables.data import exception_reason
    from trainables.model import load_tokenizer

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


def check_sweep(sweep: SweepConfig) -> DataSummary:
    """Raise ConfigError naming the problem, or describe the data that trials will see."""
    from trainables.data import describe_problems, load_dialogues
    from trainables.prompt import encode_example, scaffolding_length

    offline_reason = prefer_local_cache_when_offline(sweep)
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
    )
