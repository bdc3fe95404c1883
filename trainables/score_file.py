"""Score an adapter on an evaluation file the user gives (e.g. DialogSum's test split), apart from
the validation set that drove the search: the trial's own model loading, prompt and generation,
ROUGE against one or several reference summaries per dialogue, by both stated rules."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from peft import PeftModel

from trainables.config import DataConfig, TrialConfig, expand_path
from trainables.data import load_dialogues, load_file
from trainables.errors import ConfigError
from trainables.evaluation import RougeEvaluation
from trainables.metrics import BEST_REFERENCE, REFERENCE_RULES
from trainables.model import load_quantized_model, use_cudnn_attention
from trainables.prompt import load_tokenizer

NUMBERED_REFERENCE = re.compile(r"(.+?)(\d+)$")


def reference_fields(columns: list[str], summary_field: str, given: list[str] | None) -> list[str]:
    """The given fields, else the config's summary field, else its numbered copies (summary1, summary2...)."""
    if given:
        missing = [f for f in given if f not in columns]
        if missing:
            raise ConfigError(f"reference field(s) {', '.join(missing)} not in the file (it has: {', '.join(columns)})")
        return given
    if summary_field in columns:
        return [summary_field]
    numbered = [c for c in columns if (m := NUMBERED_REFERENCE.fullmatch(c)) and m.group(1) == summary_field]
    if not numbered:
        raise ConfigError(f"no '{summary_field}' or '{summary_field}1', '{summary_field}2'... field "
                          f"(the file has: {', '.join(columns)}); name them with --reference-fields")
    return sorted(numbered, key=lambda c: int(NUMBERED_REFERENCE.fullmatch(c).group(2)))


def score_adapter_on_file(trial: TrialConfig, checkpoint: str, eval_file: str, given_fields: list[str] | None = None,
                          max_examples: int | None = None) -> dict[str, Any]:
    """`trial`: the best trial's config, planned for this machine (`best --eval-file`)."""
    path = Path(expand_path(eval_file))  # its existence and type were checked by the CLI
    data = DataConfig(dialogue_field=trial.data.dialogue_field, summary_field=trial.data.summary_field)
    rows, _ = load_file(path, data)
    if data.dialogue_field not in rows.column_names:
        raise ConfigError(f"--eval-file {eval_file}: no '{data.dialogue_field}' field (it has: "
                          f"{', '.join(rows.column_names)})")
    fields = reference_fields(rows.column_names, data.summary_field, given_fields)
    dialogues, references, skipped = [], [], 0
    for row in rows:
        targets = [row[f] for f in fields if isinstance(row[f], str) and row[f].strip()]
        if not isinstance(row[data.dialogue_field], str) or not row[data.dialogue_field].strip() or not targets:
            skipped += 1
            continue
        dialogues.append(row[data.dialogue_field])
        references.append(targets)
    if max_examples is not None:
        dialogues, references = dialogues[:max_examples], references[:max_examples]
    if not dialogues:
        raise ConfigError(f"--eval-file {eval_file}: no row has both a dialogue and a reference summary")
    return {"file": str(path.resolve()), "examples": len(dialogues), "skipped_rows": skipped,
            "reference_fields": fields, "rules": dict(REFERENCE_RULES),
            **score_adapter(trial, checkpoint, dialogues, references)}


def score_adapter_on_test(trial: TrialConfig, checkpoint: str | None) -> dict[str, Any]:
    """The sweep's held-out test dialogues (data.test_examples), scored as validation is (`best --test`)."""
    test = load_dialogues(trial.data)["test"]
    if test is None:
        raise ConfigError("--test: this sweep held out no test dialogues (data.test_examples is 0); "
                          "score a file with --eval-file instead")
    dialogues, summaries = list(test["dialogue"]), list(test["summary"])
    one_reference_each = score_adapter(trial, checkpoint, dialogues, [[s] for s in summaries])[BEST_REFERENCE]
    return {"test_examples": len(dialogues), "seed": trial.data.seed, **one_reference_each}


def score_adapter(trial: TrialConfig, checkpoint: str | None, dialogues: list[str],
                  references: list[list[str]]) -> dict[str, Any]:
    """ROUGE of the adapter in `checkpoint` (None: the base model alone, zero-shot) on these dialogues,
    scored the way the sweep scores validation: the same prompts, generation and cut."""
    return score_adapter_on_sets(trial, checkpoint, {"": (dialogues, references)})[""]


def score_adapter_on_sets(trial: TrialConfig, checkpoint: str | None,
                          sets: dict[str, tuple[list[str], list[list[str]]]]) -> dict[str, Any]:
    """score_adapter for each named set of (dialogues, references), the model loaded once."""
    tokenizer = load_tokenizer(trial.model)
    model = load_quantized_model(trial.model)
    use_cudnn_attention(trial.plan.cudnn_attention)  # every batch of prompts a new shape: as the trials score
    if checkpoint is not None:
        model = PeftModel.from_pretrained(model, checkpoint)
    evaluation = RougeEvaluation.for_trial(trial, tokenizer)
    return {name: evaluation.rouge_by_rule(model, evaluation.prompts(dialogues), references)
            for name, (dialogues, references) in sets.items()}
