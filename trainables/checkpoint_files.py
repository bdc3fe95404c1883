"""What qlora-sweep adds to every adapter checkpoint, beside peft's and the Trainer's own files."""

from __future__ import annotations

import json
from typing import Any

TRIAL_RECORD = "qlora_sweep_trial.json"  # the trial's whole config (a TrialConfig) and the step it was saved at
RUNG_HISTORY = "qlora_sweep_rungs.jsonl"  # every rung reported up to this checkpoint, one JSON row each


def trial_record_text(trial: dict[str, Any], step: int | None) -> str:
    """TRIAL_RECORD's layout, in checkpoints and exports alike: the trial's config (as JSON) and its step."""
    return json.dumps({"trial": trial, "step": step}, indent=2)


def rung_history_text(rows: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(row) + "\n" for row in rows)


def parse_rung_history(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]
