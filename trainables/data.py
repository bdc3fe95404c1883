"""Load dialogue/summary data (local files or a hub id) and tokenize it for one trial.

Local formats: jsonl, json, csv, parquet. A folder holds one file per split (train.jsonl,
validation.jsonl, ...); a single file is the train split. Loading and tokenizing go through
`datasets`, whose on-disk cache lets trials on one node reuse each other's work.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from search.config import ConfigError, DataConfig, PromptConfig

BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
SAMPLE_DIR = Path(__file__).resolve().parent.parent / "search" / "samples"


def resolve_data_path(data: DataConfig) -> str:
    return str(SAMPLE_DIR) if data.path is None else str(Path(data.path).expanduser())


def _split_files(path: Path) -> dict[str, Path]:
    if path.is_file():
        if path.suffix not in BUILDERS:
            raise ConfigError(f"data.path {path}: unsupported file type '{path.suffix}' (use {', '.join(BUILDERS)})")
        return {"train": path}
    files: dict[str, Path] = {}
    for candidate in sorted(path.iterdir()):
        if candidate.suffix in BUILDERS and candidate.stem not in files:
            files[candidate.stem] = candidate
    if not files:
        raise ConfigError(f"data.path {path}: no {'/'.join(BUILDERS)} files in this folder")
    return files


def _looks_local(text: str) -> bool:
    return text.startswith(("/", ".", "~")) or Path(text).suffix in BUILDERS


def load_dialogues(data: DataConfig) -> dict[str, Any]:
    """{'train': Dataset, 'validation': Dataset}, columns renamed to dialogue/summary, checked."""
    import datasets

    datasets.disable_progress_bars()
    # Loader failures come back as one ConfigError line; datasets would also log them.
    datasets.logging.set_verbosity_error()
    logging.getLogger("datasets").setLevel(logging.CRITICAL)
    source = resolve_data_path(data)
    path = Path(source)
    if path.exists():
        files = _split_files(path)
        if data.train_split not in files:
            raise ConfigError(f"data.path {path}: no '{data.train_split}' split (found: {', '.join(files)})")
        wanted = {data.train_split: files[data.train_split]}
        if data.validation_split and data.validation_split in files:
            wanted[data.validation_split] = files[data.validation_split]
        splits = {}
        for split, file in wanted.items():
            splits[split] = _load_file(file)
    elif _looks_local(source):
        raise ConfigError(f"data.path {source} does not exist")
    else:
        splits = _load_hub(source)
    if data.train_split not in splits:
        raise ConfigError(f"data {source}: no '{data.train_split}' split (found: {', '.join(splits)})")

    train = splits[data.train_split]
    validation = splits.get(data.validation_split) if data.validation_split else None
    for split_name, dataset in ((data.train_split, train), (data.validation_split, validation)):
        if dataset is not None:
            _check_fields(dataset, data, f"{source} [{split_name}]")
    if validation is None:
        if len(train) < 2:
            raise ConfigError(f"data {source}: {len(train)} training example(s), too few to hold out validation")
        held_out = train.train_test_split(test_size=data.validation_fraction, seed=data.seed)
        train, validation = held_out["train"], held_out["test"]

    train = _standardize(train, data)
    validation = _standardize(validation, data)
    if data.max_train_examples is not None:
        train = train.select(range(min(len(train), data.max_train_examples)))
    validation = validation.select(range(min(len(validation), data.max_validation_examples)))
    if len(train) == 0:
        raise ConfigError(f"data {source}: the training set is empty")
    if len(validation) == 0:
        raise ConfigError(f"data {source}: the validation set is empty")
    return {"train": train, "validation": validation}


def _load_file(file: Path):
    import datasets

    if file.stat().st_size == 0:
        raise ConfigError(f"data file {file}: the dataset is empty")
    try:
        loaded = datasets.load_dataset(BUILDERS[file.suffix], data_files=str(file), split="train")
    except Exception as exc:  # datasets raises many types for unreadable files
        if "corresponds to no data" in str(exc):
            raise ConfigError(f"data file {file}: the dataset is empty") from None
        raise ConfigError(f"data file {file}: cannot be read ({_reason(exc)})") from None
    return loaded


def _load_hub(dataset_id: str) -> dict[str, Any]:
    import datasets

    try:
        return dict(datasets.load_dataset(dataset_id))
    except Exception as exc:
        raise ConfigError(
            f"data.path '{dataset_id}' is not a local path and could not be loaded from the "
            f"Hugging Face hub ({_reason(exc)}); give a local folder or file instead"
        ) from None


def _reason(exc: BaseException) -> str:
    """The first specific message: datasets wraps the parser's useful one in a generic error."""
    chain: list[BaseException] = []
    while exc is not None and exc not in chain:
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    for candidate in chain:
        text = str(candidate).strip()
        if text and "An error occurred while generating the dataset" not in text:
            return text.splitlines()[0][:200]
    return type(chain[0]).__name__


def _check_fields(dataset, data: DataConfig, where: str) -> None:
    for field in (data.dialogue_field, data.summary_field):
        if field not in dataset.column_names:
            raise ConfigError(
                f"data {where}: missing field '{field}' (fields: {', '.join(dataset.column_names) or 'none'})"
            )
    if len(dataset) == 0:
        raise ConfigError(f"data {where}: the dataset is empty")


def _standardize(dataset, data: DataConfig):
    keep = {data.dialogue_field: "dialogue", data.summary_field: "summary"}
    dataset = dataset.remove_columns([c for c in dataset.column_names if c not in keep])
    renames = {old: new for old, new in keep.items() if old != new}
    return dataset.rename_columns(renames) if renames else dataset


def tokenize_for_training(dataset, tokenizer: Any, prompt: PromptConfig, max_length: int):
    """input_ids/labels per example; examples whose summary cannot fit are dropped."""
    from trainables.prompt import encode_example

    def encode(batch: dict[str, list]) -> dict[str, list]:
        out: dict[str, list] = {"input_ids": [], "labels": [], "fits": []}
        for dialogue, summary in zip(batch["dialogue"], batch["summary"]):
            encoded = encode_example(tokenizer, prompt, dialogue or "", summary or "", max_length)
            out["fits"].append(encoded is not None)
            out["input_ids"].append(encoded["input_ids"] if encoded else [])
            out["labels"].append(encoded["labels"] if encoded else [])
        return out

    encoded = dataset.map(encode, batched=True, remove_columns=dataset.column_names, desc="tokenize")
    return encoded.filter(lambda fits: fits, input_columns="fits").remove_columns("fits")
