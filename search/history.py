"""Make each trial's result.json agree with the rung history its newest checkpoint carries.

Tune's driver writes result.json and its experiment state to the storage folder on a timer, in
the background. A driver killed with -9 can therefore leave a trial whose checkpoint Tune knows
but whose rows never reached result.json, or rows for a rung whose checkpoint Tune had not yet
registered (so the resumed trial runs that rung again). Every checkpoint holds the rungs that
led to it (`RUNG_HISTORY`, written by the trial before it reports), and Tune always keeps a
trial's newest checkpoint: that chain is the record of the weights the trial ended with.

After a sweep (and after a resumed one) each result.json is made to match that chain: missing
rows come back, marked `restored_from_checkpoint`; rows of a first attempt at a rung that was
run again move to `result.superseded.json` beside it, so nothing is deleted. Then progress.csv is
written again from result.json where its rows are not result.json's: after a resume Tune starts it
over, or goes on appending after the first attempt at a rung that was run again.
"""

from __future__ import annotations

import csv
import io
import json
import re
from typing import Any

import pyarrow.fs

from search.experiment import replace_file
from trainables.checkpoint_files import RUNG_HISTORY

# Fields Tune adds to every row that don't change within a trial.
TRIAL_FIELDS = ("trial_id", "experiment_tag", "config", "hostname", "node_ip")


def restore_result_rows(experiment_path: str) -> list[str]:
    """Repair every trial folder of the experiment; returns one line per trial that changed."""
    filesystem, root = pyarrow.fs.FileSystem.from_uri(experiment_path)
    changes = []
    for trial in filesystem.get_file_info(pyarrow.fs.FileSelector(root)):
        if trial.type == pyarrow.fs.FileType.Directory:
            for change in (_restore_trial(filesystem, trial.path), _restore_progress(filesystem, trial.path)):
                if change:
                    changes.append(change)
    return changes


def _restore_progress(filesystem: Any, trial_dir: str) -> str | None:
    """progress.csv as Tune's CSV logger writes it (a row per result, `config` left out, nested
    values flattened with '/'), from result.json, where its reports (report_id) are not result.json's."""
    rows = _read_rows(filesystem, f"{trial_dir}/result.json")
    path = f"{trial_dir}/progress.csv"
    if not rows or filesystem.get_file_info(path).type != pyarrow.fs.FileType.File:
        return None
    with filesystem.open_input_stream(path) as stream:
        csv_rows = list(csv.DictReader(io.StringIO(stream.read().decode("utf-8"))))
    written = len(csv_rows)
    if [row.get("report_id") or "" for row in csv_rows] == [str(row.get("report_id") or "") for row in rows]:
        return None
    flat = [_flatten({k: v for k, v in row.items() if k != "config"}) for row in rows]
    columns = list(dict.fromkeys(key for row in flat for key in row))
    text = io.StringIO()
    writer = csv.DictWriter(text, columns)
    writer.writeheader()
    writer.writerows(flat)
    _write_text(filesystem, path, text.getvalue())
    return f"{trial_dir.rsplit('/', 1)[-1]}: progress.csv written again from result.json ({len(rows)} rows, it had {written})"


def _flatten(row: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in row.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}/"))
        else:
            flat[prefix + key] = value
    return flat


def _restore_trial(filesystem: Any, trial_dir: str) -> str | None:
    chain = _newest_chain(filesystem, trial_dir)
    if not chain:
        return None
    rows = _read_rows(filesystem, f"{trial_dir}/result.json")
    chain_ids = {row["report_id"] for row in chain}
    last_step = chain[-1]["step"]
    kept, superseded = [], []
    for row in rows:
        redone = row.get("report_id") not in chain_ids and row.get("step", 0) <= last_step
        (superseded if redone else kept).append(row)
    present = {row.get("report_id") for row in kept}
    trial_fields = {key: rows[-1][key] for key in TRIAL_FIELDS if rows and key in rows[-1]}
    trial_fields.setdefault("trial_id", _trial_id_from_folder(trial_dir))
    restored = [
        {**trial_fields, **row, "training_iteration": row["rung"], "restored_from_checkpoint": True}
        for row in chain if row["report_id"] not in present
    ]
    if not restored and not superseded:
        return None
    merged = sorted(kept + restored, key=lambda row: row.get("step", 0))
    if superseded:
        earlier = _read_rows(filesystem, f"{trial_dir}/result.superseded.json")
        _write_rows(filesystem, f"{trial_dir}/result.superseded.json", earlier + superseded)
    _write_rows(filesystem, f"{trial_dir}/result.json", merged)
    return (f"{trial_dir.rsplit('/', 1)[-1]}: {len(restored)} result row(s) restored from its checkpoint, "
            f"{len(superseded)} superseded by a rerun")


def _newest_chain(filesystem: Any, trial_dir: str) -> list[dict[str, Any]]:
    checkpoints = sorted(
        info.path for info in filesystem.get_file_info(pyarrow.fs.FileSelector(trial_dir))
        if info.type == pyarrow.fs.FileType.Directory and re.fullmatch(r"checkpoint_\d+", info.base_name)
    )
    for checkpoint in reversed(checkpoints):
        chain = _read_rows(filesystem, f"{checkpoint}/{RUNG_HISTORY}")
        if chain:
            return chain
    return []


def _read_rows(filesystem: Any, path: str) -> list[dict[str, Any]]:
    if filesystem.get_file_info(path).type != pyarrow.fs.FileType.File:
        return []
    with filesystem.open_input_stream(path) as stream:
        text = stream.read().decode("utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _write_rows(filesystem: Any, path: str, rows: list[dict[str, Any]]) -> None:
    _write_text(filesystem, path, "".join(json.dumps(row) + "\n" for row in rows))


def _write_text(filesystem: Any, path: str, text: str) -> None:
    replace_file(filesystem, path, text.encode("utf-8"))


def _trial_id_from_folder(trial_dir: str) -> str:
    # Tune names trial folders <trainable>_<trial_id>_<tag>; run_trial has one underscore.
    parts = trial_dir.rsplit("/", 1)[-1].split("_")
    return parts[2] if len(parts) > 2 else ""
