"""Data a sweep must handle or refuse: a JSON-lines file made of the bad rows a real export contains, next to
good ones (write_dirty_data), and a folder whose validation summaries fit no max_length the tests use
(write_long_validation_summaries)."""

import json
from pathlib import Path

GOOD_ROWS = 10
EXPECTED_PROBLEMS = {
    "empty dialogue": 1, "empty summary": 1, "non-string dialogue": 1, "invalid UTF-8": 1,
    "duplicate id": 1, "not valid JSON": 1, "missing summary": 1, "over-long dialogue (truncated)": 1,
}


def write_dirty_data(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    good = [json.dumps({"id": f"g{i}", "dialogue": f"#Person1#: hello {i}.\n#Person2#: hi there.",
                        "summary": f"#Person1# greets #Person2# {i}."}).encode() for i in range(GOOD_ROWS)]
    bad = [
        json.dumps({"id": "e1", "dialogue": "   ", "summary": "s"}).encode(),
        json.dumps({"id": "e2", "dialogue": "#Person1#: x", "summary": ""}).encode(),
        json.dumps({"id": "n1", "dialogue": 42, "summary": "s"}).encode(),
        b'{"id": "u1", "dialogue": "bad \xff bytes", "summary": "s"}',
        json.dumps({"id": "g3", "dialogue": "#Person1#: again", "summary": "A repeat."}).encode(),
        b'{broken json',
        json.dumps({"id": "m1", "dialogue": "#Person1#: no summary"}).encode(),
        json.dumps({"id": "l1", "dialogue": "#Person1#: " + "word " * 60_000, "summary": "A long one."}).encode(),
    ]
    (folder / "train.jsonl").write_bytes(b"\n".join(good + bad) + b"\n")
    (folder / "validation.jsonl").write_bytes(b"\n".join(good[:6]) + b"\n")
    return folder


def write_long_validation_summaries(folder: Path) -> Path:
    """Training rows that fit any max_length the tests use, beside 6 validation rows whose summaries
    (over 400 tokens) none of them fits."""
    folder.mkdir(parents=True, exist_ok=True)
    train = [{"id": f"t{i}", "dialogue": f"#Person1#: hello {i}.\n#Person2#: hi there.",
              "summary": f"#Person1# greets #Person2# {i}."} for i in range(GOOD_ROWS)]
    validation = [{"id": f"v{i}", "dialogue": f"#Person1#: hello {i}.",
                   "summary": "A very long summary of a short greeting. " * 50 + str(i)} for i in range(6)]
    (folder / "train.jsonl").write_text("".join(json.dumps(row) + "\n" for row in train), encoding="utf-8")
    (folder / "validation.jsonl").write_text("".join(json.dumps(row) + "\n" for row in validation), encoding="utf-8")
    return folder
