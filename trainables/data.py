"""Load dialogue/summary data (local files or a hub id) and tokenize it for one trial.

Local formats: jsonl, json, csv, parquet. A folder holds one file per split (train.jsonl,
validation.jsonl, ...); a single file is the train split. Loading and tokenizing go through
`datasets`, whose on-disk cache lets trials on one node reuse each other's work.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from collections import Counter
from contextlib import AbstractContextManager
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import datasets

from trainables.config import DataConfig, EvaluationConfig, PromptConfig, expand_path
from trainables.errors import ConfigError
from trainables import prompt as prompt_module
from trainables.prompt import encode_examples, tokenizing_threads
from trainables.quiet import logger_quiet_below

DATA_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")  # the local data files qlora-sweep reads
BUILDERS = dict(zip(DATA_SUFFIXES, ("json", "json", "csv", "parquet")))  # datasets' loader for each
TRUNCATED = "over-long dialogue (truncated)"  # kept, cut to max_dialogue_chars; never a reason to fail
SAMPLE_DIR = Path(__file__).resolve().parent / "samples"  # the dialogue sample shipped with qlora-sweep


def resolve_data_path(data: DataConfig) -> str:
    return str(SAMPLE_DIR) if data.path is None else expand_path(data.path)


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
    source = resolve_data_path(data)
    path = Path(source)
    if path.exists():
        files = _split_files(path)
        if data.train_split not in files:
            raise ConfigError(f"data.path {path}: no '{data.train_split}' split (found: {', '.join(files)})")
        wanted = {data.train_split: files[data.train_split]}
        if data.validation_split and data.validation_split in files:
            wanted[data.validation_split] = files[data.validation_split]
        splits, problems = {}, {}
        for split, file in wanted.items():
            splits[split], problems[split] = load_file(file, data)
    elif _looks_local(source):
        raise ConfigError(f"data.path {source} does not exist")
    else:
        splits = _load_hub(source)
        problems = {split: Counter() for split in splits}
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

    train, train_problems = _clean(train, data, problems.get(data.train_split, Counter()))
    held_out = problems.get(data.validation_split, Counter()) if data.validation_split in problems else Counter()
    validation, validation_problems = _clean(validation, data, held_out)
    report = {"train": train_problems, "validation": validation_problems}
    dropped = {split: Counter({p: n for p, n in c.items() if p != TRUNCATED}) for split, c in report.items()}
    if data.bad_rows == "fail" and any(sum(c.values()) for c in dropped.values()):
        raise ConfigError(f"data {source}: bad rows ({describe_problems(dropped)}); "
                          "fix them or set data.bad_rows: drop")
    train, test = hold_out_test(train, data, source)
    if data.max_train_examples is not None:
        train = train.select(range(min(len(train), data.max_train_examples)))
    validation = validation.select(range(min(len(validation), data.max_validation_examples)))
    if len(train) == 0:
        raise ConfigError(f"data {source}: the training set is empty")
    if len(validation) == 0:
        raise ConfigError(f"data {source}: the validation set is empty")
    return {"train": train, "validation": validation, "test": test, "problems": report}


def hold_out_test(train, data: DataConfig, source: str):
    """(train without the test dialogues, the test dialogues or None): data.test_examples rows
    drawn by data.seed, both kept in file order."""
    if not data.test_examples:
        return train, None
    if data.test_examples >= len(train):
        raise ConfigError(f"data.test_examples={data.test_examples}: {source} has {len(train)} usable training "
                          "examples; hold out fewer")
    chosen = set(random.Random(data.seed).sample(range(len(train)), data.test_examples))
    test = train.select(sorted(chosen))
    return train.select([i for i in range(len(train)) if i not in chosen]), test


def describe_problems(report: dict[str, Counter]) -> str:
    """'train: 2 empty summary, 1 duplicate id; validation: 1 invalid UTF-8' (dropped or truncated rows)."""
    parts = []
    for split, problems in report.items():
        if problems:
            parts.append(f"{split}: " + ", ".join(f"{n} {p}" for p, n in sorted(problems.items())))
    return "; ".join(parts)


def _row_problem(dialogue: Any, summary: Any) -> str:
    for name, value in (("dialogue", dialogue), ("summary", summary)):
        if value is None:
            return f"missing {name}"
        if not isinstance(value, str):
            return f"non-string {name}"
    if not dialogue.strip():
        return "empty dialogue"
    if not summary.strip():
        return "empty summary"
    if "\ufffd" in dialogue or "\ufffd" in summary:
        return "invalid UTF-8"  # decoded with replacement characters by the file reader
    return ""


def _clean(dataset, data: DataConfig, problems: Counter):
    """Standardized columns, bad rows dropped (and counted), over-long dialogues cut."""
    problems = Counter(problems)
    dialogues, summaries = dataset[data.dialogue_field], dataset[data.summary_field]  # checked by _check_fields
    ids = dataset[data.id_field] if data.id_field in dataset.column_names else [None] * len(dataset)
    keep, seen = [], set()
    for index, (dialogue, summary, row_id) in enumerate(zip(dialogues, summaries, ids)):
        problem = _row_problem(dialogue, summary)
        if not problem and row_id is not None:
            if row_id in seen:
                problem = "duplicate id"
            seen.add(row_id)
        if problem:
            problems[problem] += 1
        else:
            keep.append(index)
            if len(dialogue) > data.max_dialogue_chars:
                problems[TRUNCATED] += 1
    dataset = _standardize(dataset.select(keep), data)
    if problems[TRUNCATED]:
        limit = data.max_dialogue_chars
        dataset = dataset.map(lambda row: {"dialogue": row["dialogue"][:limit]}, desc="truncate")
    return dataset, problems


def load_file(file: Path, data: DataConfig) -> tuple[Any, Counter]:
    """The file as a Dataset, and the rows that could not even be read, by problem."""
    if file.stat().st_size == 0:
        raise ConfigError(f"data file {file}: the dataset is empty")
    try:
        with loader_errors_quiet():
            return datasets.load_dataset(BUILDERS[file.suffix], data_files=str(file), split="train"), Counter()
    except Exception as exc:  # datasets raises many types for unreadable files
        if "corresponds to no data" in str(exc):
            raise ConfigError(f"data file {file}: the dataset is empty") from None
        if file.suffix != ".jsonl":
            raise ConfigError(f"data file {file}: cannot be read ({exception_reason(exc)})") from None
    # One bad line (invalid UTF-8, broken JSON, a number where text belongs) makes datasets reject
    # the whole file; read it line by line instead and count what had to be left out.
    return _read_jsonl_row_by_row(file, data)


def _read_jsonl_row_by_row(file: Path, data: DataConfig) -> tuple[Any, Counter]:
    fields = (data.id_field, data.dialogue_field, data.summary_field)
    rows, problems, seen_fields = [], Counter(), set()
    for raw in file.read_bytes().splitlines():
        if not raw.strip():
            continue
        try:
            row = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            problems["invalid UTF-8"] += 1
            continue
        except json.JSONDecodeError:
            problems["not valid JSON"] += 1
            continue
        if not isinstance(row, dict):
            problems["not a JSON object"] += 1
            continue
        seen_fields.update(row)
        wrong_type = [f for f in fields[1:] if row.get(f) is not None and not isinstance(row[f], str)]
        if wrong_type:
            problems[f"non-string {wrong_type[0]}"] += 1
            continue
        row_id = row.get(data.id_field)
        # Arrow columns hold one type: ids of other types become their JSON text.
        rows.append({**{f: row.get(f) for f in fields[1:]},
                     data.id_field: row_id if isinstance(row_id, str) or row_id is None else json.dumps(row_id)})
    if not rows:
        reasons = ", ".join(f"{n} {problem}" for problem, n in problems.items())
        raise ConfigError(f"data file {file}: no readable rows ({reasons})")
    columns = {f: [r[f] for r in rows] for f in fields if f in seen_fields}
    return datasets.Dataset.from_dict(columns), problems


def _load_hub(dataset_id: str) -> dict[str, Any]:
    try:
        with loader_errors_quiet():
            return dict(datasets.load_dataset(dataset_id))
    except Exception as exc:
        raise ConfigError(
            f"data.path '{dataset_id}' is not a local path and could not be loaded from the "
            f"Hugging Face hub ({exception_reason(exc)}); give a local folder or file instead"
        ) from None


def loader_errors_quiet() -> AbstractContextManager[None]:
    """datasets logs a loader's failure as well as raising it; the failure comes back as one
    ConfigError line, so the log record would say the same thing twice."""
    return logger_quiet_below("datasets", logging.CRITICAL)


def exception_reason(exc: BaseException) -> str:
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


def encoding_code_digest() -> str:
    """A digest of the module that turns a dialogue into training rows (trainables/prompt.py). datasets keys a
    map's cache on the mapped function's own code and what it holds, but on a module-level function it calls
    (encode_examples) by name only: without this, tokenized rows cached before a change to that code would be
    loaded after it as if current. Where the source cannot be read (bytecode only), qlora-sweep's version."""
    try:
        return hashlib.sha256(Path(prompt_module.__file__).read_bytes()).hexdigest()[:16]
    except OSError:
        try:
            return "qlora-sweep " + version("qlora-sweep")
        except PackageNotFoundError:
            return "qlora-sweep (unknown version)"


ENCODING_CODE = encoding_code_digest()  # read once, at import: every trial of a process keys the same files


def tokenize_for_training(dataset, tokenizer: Any, prompt: PromptConfig, max_length: int, reuse: bool = True):
    """input_ids/labels per example; examples whose summary cannot fit are dropped.

    datasets caches the result on disk under a fingerprint of (data, tokenizer, prompt,
    max_length, the encoding code), so later trials on the node load it instead of tokenizing again (`reuse`).
    """
    # datasets keys the cache on a pickle of what `encode` holds, and a pydantic object pickles with the
    # fields that were set explicitly: the same prompt from a YAML default and from JSON keyed two copies
    prompt = PromptConfig.model_validate(prompt.model_dump())

    def encode(batch: dict[str, list], encoding_code: str) -> dict[str, list]:  # encoding_code: a cache key only
        encoded = encode_examples(tokenizer, prompt, [d or "" for d in batch["dialogue"]],
                                  [s or "" for s in batch["summary"]], max_length)
        return {"input_ids": [e["input_ids"] if e else [] for e in encoded],
                "labels": [e["labels"] if e else [] for e in encoded],
                "fits": [e is not None for e in encoded]}

    encoded = dataset.map(encode, batched=True, remove_columns=dataset.column_names, desc="tokenize",
                          load_from_cache_file=reuse, fn_kwargs={"encoding_code": ENCODING_CODE})
    return encoded.filter(lambda fits: fits, input_columns="fits", load_from_cache_file=reuse).remove_columns("fits")


def validation_for_loss(validation: Any, evaluation: EvaluationConfig, max_rungs: int, seed: int) -> Any:
    """The validation dialogues a trial's validation loss covers at every rung (evaluation.loss_examples,
    decided): the whole split, or the selection of it that trials and the driver alike tokenize."""
    chosen = evaluation.loss_dialogues(max_rungs, len(validation), seed)
    return validation if chosen is None else validation.select(chosen)


def tokenize_ahead(trained_on: dict[str, Any], tokenizer: Any, prompt: PromptConfig,
                   max_lengths: list[int], threads: int = 1) -> list[str]:
    """What a trial trains and evaluates its loss on (`trained_on`: name to dialogues, the training
    split and validation_for_loss's), tokenized at each of `max_lengths` into datasets' on-disk cache,
    where a trial on this node with the same data, tokenizer and prompt finds it (tokenize_for_training)
    instead of tokenizing before its first step; the cache files written or found. The driver runs it
    while the first trials' workers import their libraries, each tokenizer call over `threads` threads
    (the files are the same for any count)."""
    files = []
    with tokenizing_threads(threads):
        for max_length in max_lengths:
            for rows in trained_on.values():
                tokenized = tokenize_for_training(rows, tokenizer, prompt, max_length)
                files.extend(cache["filename"] for cache in tokenized.cache_files)
    return files
