import json

import pytest

from tests.dirty_data import EXPECTED_PROBLEMS, GOOD_ROWS, write_dirty_data
from tests.helpers import ROOT
from trainables.config import DataConfig, PromptConfig
from trainables.data import load_dialogues, tokenize_for_training
from trainables.errors import ConfigError

pytestmark = pytest.mark.unit

ROWS = [{"id": str(i), "text": f"#Person1#: line {i}.\n#Person2#: ok.", "abstract": f"Summary {i}.", "topic": "t"}
        for i in range(20)]


def _write(folder, split, fmt, rows):
    import pandas as pd

    path = folder / f"{split}.{fmt}"
    frame = pd.DataFrame(rows)
    if fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif fmt == "json":
        path.write_text(json.dumps(rows))
    elif fmt == "csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path)
    return path


@pytest.mark.parametrize("fmt", ["jsonl", "json", "csv", "parquet"])
def test_each_local_format_loads_with_renamed_fields(fmt, tmp_path):
    _write(tmp_path, "train", fmt, ROWS)
    _write(tmp_path, "validation", fmt, ROWS[:5])
    data = load_dialogues(DataConfig(path=str(tmp_path), dialogue_field="text", summary_field="abstract"))
    assert len(data["train"]) == 20 and len(data["validation"]) == 5
    assert data["train"].column_names == ["dialogue", "summary"]
    assert data["validation"][0]["summary"] == "Summary 0."


def test_a_single_file_is_split_by_the_validation_fraction_reproducibly(tmp_path):
    path = _write(tmp_path, "all", "jsonl", ROWS)
    config = DataConfig(path=str(path), dialogue_field="text", summary_field="abstract", validation_fraction=0.25)
    first, second = load_dialogues(config), load_dialogues(config)
    assert len(first["train"]) == 15 and len(first["validation"]) == 5
    assert first["validation"]["summary"] == second["validation"]["summary"]


def test_caps_limit_train_and_validation_examples(tmp_path):
    _write(tmp_path, "train", "jsonl", ROWS)
    _write(tmp_path, "validation", "jsonl", ROWS)
    data = load_dialogues(DataConfig(path=str(tmp_path), dialogue_field="text", summary_field="abstract",
                                     max_train_examples=7, max_validation_examples=3))
    assert len(data["train"]) == 7 and len(data["validation"]) == 3


def test_test_examples_are_held_out_of_train_by_the_seed_before_the_train_cap(tmp_path):
    _write(tmp_path, "train", "jsonl", ROWS)
    _write(tmp_path, "validation", "jsonl", ROWS[:4])
    config = DataConfig(path=str(tmp_path), dialogue_field="text", summary_field="abstract", test_examples=6)
    data, again = load_dialogues(config), load_dialogues(config)
    test, train = data["test"]["summary"], data["train"]["summary"]
    assert len(test) == 6 and len(train) == 14 and not set(test) & set(train)
    assert test == again["test"]["summary"] and train == sorted(train, key=lambda s: int(s.split()[1][:-1]))
    assert load_dialogues(config.model_copy(update={"seed": 1}))["test"]["summary"] != test
    capped = load_dialogues(config.model_copy(update={"max_train_examples": 5}))
    assert capped["test"]["summary"] == test and not set(capped["train"]["summary"]) & set(test)
    assert load_dialogues(config.model_copy(update={"test_examples": 0}))["test"] is None
    with pytest.raises(ConfigError, match="data.test_examples=20: .* has 20 usable training examples; hold out fewer"):
        load_dialogues(config.model_copy(update={"test_examples": 20}))


def test_the_shipped_sample_is_the_default():
    data = load_dialogues(DataConfig())
    assert len(data["train"]) == 240 and len(data["validation"]) == 40


def test_a_hub_id_fails_with_a_clear_message_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError, match="is not a local path and could not be loaded from the Hugging Face hub"):
        load_dialogues(DataConfig(path="some-org/some-dataset"))


def test_tokenizing_drops_examples_whose_summary_cannot_fit(tiny_tokenizer, tmp_path):
    rows = [{"dialogue": "#Person1#: hi.", "summary": "short."},
            {"dialogue": "#Person1#: hi.", "summary": "a very long summary " * 40}]
    _write(tmp_path, "train", "jsonl", rows)
    _write(tmp_path, "validation", "jsonl", rows)
    data = load_dialogues(DataConfig(path=str(tmp_path)))
    encoded = tokenize_for_training(data["train"], tiny_tokenizer, PromptConfig(), 150)
    assert len(encoded) == 1
    assert set(encoded.column_names) == {"input_ids", "labels"}


def test_bad_rows_are_counted_per_problem_and_dropped_or_truncated(tmp_path):
    data = load_dialogues(DataConfig(path=str(write_dirty_data(tmp_path / "dirty")), max_dialogue_chars=1000))
    assert dict(data["problems"]["train"]) == EXPECTED_PROBLEMS
    assert len(data["train"]) == GOOD_ROWS + 1  # the over-long dialogue stays, cut
    assert max(len(d) for d in data["train"]["dialogue"]) == 1000
    assert all(isinstance(s, str) and s.strip() for s in data["train"]["summary"])


def test_bad_rows_fail_policy_names_every_problem_but_not_truncation(tmp_path):
    with pytest.raises(ConfigError) as error:
        load_dialogues(DataConfig(path=str(write_dirty_data(tmp_path / "dirty")), bad_rows="fail"))
    message = str(error.value)
    assert "1 duplicate id" in message and "1 invalid UTF-8" in message and "1 not valid JSON" in message
    assert "truncated" not in message and "set data.bad_rows: drop" in message


def test_trials_share_one_tokenized_copy_per_tokenizer_prompt_and_max_length(tiny_model_path, tmp_path):
    """datasets' on-disk cache, keyed by the fingerprint of (data, tokenizer, prompt, max_length), hands a later
    trial the first one's tokenized rows. That the key holds across processes, as trials run, is
    tests/test_tokenize_ahead.py's: a trial's process loads the very files the driver's process wrote."""
    import os

    from trainables.config import ModelConfig
    from trainables.prompt import load_tokenizer

    data = tmp_path / "data"
    data.mkdir()
    for split in ("train", "validation"):
        (data / f"{split}.jsonl").write_text((ROOT / "trainables" / "samples" / f"{split}.jsonl").read_text())
    train = load_dialogues(DataConfig(path=str(data)))["train"]
    tokenizer = load_tokenizer(ModelConfig(name_or_path=str(tiny_model_path)))

    def copy_at(max_length: int, **kwargs) -> tuple[str, int]:
        tokenized = tokenize_for_training(train, tokenizer, PromptConfig(), max_length, **kwargs)
        cached = tokenized.cache_files[0]["filename"]
        return cached, os.stat(cached).st_mtime_ns

    first = copy_at(256)
    assert copy_at(256) == first  # the same file, not written again
    assert copy_at(192)[0] != first[0]  # another max_length: a copy of its own

    # data.reuse_tokenized: false computes and writes the copy again instead of loading it.
    cached, rewritten = copy_at(256, reuse=False)
    assert cached == first[0] and rewritten > first[1]


def test_a_change_to_the_encoding_code_keys_new_tokenized_rows_instead_of_loading_the_old(tiny_tokenizer, tmp_path,
                                                                                           monkeypatch):
    """datasets keys a map's cache on the mapped function's own code, and on encode_examples, which it calls, by
    name only; a digest of trainables/prompt.py keys it too, so rows tokenized before an upgrade that changed
    how a dialogue is encoded are not loaded after it as if current."""
    import shutil
    import subprocess
    import sys

    import trainables.data
    from tests.helpers import ROOT

    data = tmp_path / "data"
    shutil.copytree(ROOT / "trainables" / "samples", data)
    train = load_dialogues(DataConfig(path=str(data)))["train"]

    def cache_files() -> set[str]:
        return {c["filename"] for c in tokenize_for_training(train, tiny_tokenizer, PromptConfig(), 256).cache_files}

    before = cache_files()
    assert cache_files() == before  # the same code: the same files, loaded

    # The digest follows prompt.py's text: a copy of the package with one comment added to it keys other files.
    copy = tmp_path / "edited"
    shutil.copytree(ROOT / "trainables", copy / "trainables", ignore=shutil.ignore_patterns("samples"))
    with open(copy / "trainables" / "prompt.py", "a") as prompt_py:
        prompt_py.write("\n# an upgrade's change to the encoding\n")
    done = subprocess.run([sys.executable, "-c", "import trainables.data as d; print(d.__file__, d.ENCODING_CODE)"],
                          cwd=copy, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    module_file, edited = done.stdout.split()
    assert module_file.startswith(str(copy)) and edited != trainables.data.ENCODING_CODE

    monkeypatch.setattr(trainables.data, "ENCODING_CODE", edited)  # this process, as if it ran the edited code
    assert cache_files().isdisjoint(before)


def test_without_the_encoding_source_the_cache_key_is_qlora_sweeps_version(tmp_path, monkeypatch):
    """A bytecode-only install has no prompt.py to read: the installed version keys the cache instead."""
    from importlib.metadata import version

    import trainables.data
    from trainables import prompt

    assert trainables.data.encoding_code_digest() != "qlora-sweep " + version("qlora-sweep")  # the source, read
    monkeypatch.setattr(prompt, "__file__", str(tmp_path / "prompt.pyc-only" / "prompt.py"))
    assert trainables.data.encoding_code_digest() == "qlora-sweep " + version("qlora-sweep")
