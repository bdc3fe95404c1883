"""Score an adapter on an evaluation file the user gives (e.g. DialogSum's test split), apart from
the validation set that drove the search: the trial's own model loading, prompt and generation,
ROUGE against one or several reference summaries per dialogue, by both stated rules."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from search.config import ConfigError, DataConfig, SweepConfig, TrialHyperparameters

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


def score_adapter_on_file(sweep: SweepConfig, hyperparameters: dict[str, Any], checkpoint: str, eval_file: str,
                          given_fields: list[str] | None = None, max_examples: int | None = None) -> dict[str, Any]:
    import datasets
    from peft import PeftModel

    from trainables.data import _load_file
    from trainables.evaluation import BEST_REFERENCE, MEAN_OVER_REFERENCES, generate_summaries, rouge_scores_multi
    from trainables.memory import generation_batch_size, memory_budget_bytes, use_merged_copy
    from trainables.model import load_quantized_model, load_tokenizer, model_for_generation
    from trainables.prompt import encode_prompt
    from trainables.trial import quiet_libraries

    quiet_libraries()
    datasets.disable_progress_bars()
    path = Path(eval_file).expanduser()  # its existence and type were checked by the CLI
    data = DataConfig(dialogue_field=sweep.data.dialogue_field, summary_field=sweep.data.summary_field)
    rows, _ = _load_file(path, data)
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

    hp = TrialHyperparameters.resolve(sweep.search, hyperparameters)
    tokenizer = load_tokenizer(sweep.model)
    model = PeftModel.from_pretrained(load_quantized_model(sweep.model), checkpoint)
    prompts = [encode_prompt(tokenizer, sweep.prompt, d, hp.max_length) for d in dialogues]
    budget = memory_budget_bytes(sweep.resources)
    # Scored the way the sweep scores validation: through a merged copy where its settings call for one.
    evaluation = sweep.evaluation.model_copy(
        update={"merged_copy": use_merged_copy(sweep.evaluation, model, hp.max_length, budget)})
    batch = generation_batch_size(evaluation, model, hp.max_length, budget)
    with model_for_generation(model, evaluation.merged_copy) as generator:
        predictions = generate_summaries(generator, tokenizer, prompts, sweep.prompt.end_marker,
                                         sweep.evaluation.max_new_tokens, batch)
    scores = rouge_scores_multi(predictions, references)
    return {
        "file": str(path.resolve()),
        "examples": len(dialogues),
        "skipped_rows": skipped,
        "reference_fields": fields,
        "rules": {
            BEST_REFERENCE: "per example and ROUGE type, the F1 of the best-matching reference (rouge_score score_multi)",
            MEAN_OVER_REFERENCES: "per example and ROUGE type, the F1 averaged over its references",
        },
        **scores,
    }
