"""What a user takes away from a sweep: a trial's adapter as a model folder with a model card
(`export`), and summaries of their own dialogues (`predict`).

The driver picks the trial and its checkpoint, plans the trial for this machine alone, and checks
every input before anything heavy loads; trainables.export does the model work. Output appears
whole or not at all: it is written beside its destination and moved into place.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import pandas
from tqdm import tqdm

from search.experiment import RESOLVED_CONFIG, load_resolved_config
from search.packing import TrialPlanner
from search.results import best_trial, load_experiment, trial_summary
from trainables.config import DataConfig, TrialConfig, expand_path
from trainables.data import DATA_SUFFIXES, load_file
from trainables.errors import ConfigError

DIALOGUE_SLOT = "<<DIALOGUE>>"  # where the model card's prompt template takes a dialogue
PREDICTION_FIELD = "predicted_summary"  # the column predict adds to every row
OUTPUT_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")


def chosen_trial(experiment: str, trial_id: str | None) -> tuple[dict[str, Any], TrialConfig]:
    """The best trial (or the one named) with a checkpoint, and its config planned for this machine."""
    summary = trial_summary(load_experiment(experiment), trial_id) if trial_id else best_trial(load_experiment(experiment))
    if not summary["checkpoint"]:
        raise ConfigError(f"{experiment}: trial {summary['trial_id']} has no adapter checkpoint")
    trial = TrialPlanner.alone_on_this_machine(load_resolved_config(experiment)).trial_config(summary["hyperparameters"])
    return summary, trial


# --- export --------------------------------------------------------------------------------

def check_export_target(out: str, force: bool) -> Path:
    target = Path(expand_path(out)).resolve()
    if target.exists() and not force:
        raise ConfigError(f"{target} already exists; choose another folder, or --force to replace it")
    if target.exists() and not target.is_dir():
        raise ConfigError(f"{target} is a file; export writes a folder")
    for parent in target.parents:
        if parent.exists():
            if not parent.is_dir() or not os.access(parent, os.W_OK):
                raise ConfigError(f"{target}: {parent} cannot be written")
            break
    return target


def export(experiment: str, out: str, trial_id: str | None, merge: bool, dtype: str, force: bool,
           command: list[str]) -> tuple[Path, dict[str, Any]]:
    target = check_export_target(out, force)
    summary, trial = chosen_trial(experiment, trial_id)
    from trainables.export import write_export  # heavy (torch): only once the inputs are known good

    card = model_card(summary, trial, merge, dtype, command, target)
    config_text = (Path(experiment) / RESOLVED_CONFIG).read_text(encoding="utf-8")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    try:
        write_export(trial, summary["checkpoint"], staging, merge=merge, dtype=dtype,
                     sweep_config_text=config_text, card=card)
        if target.exists():  # --force: the old folder goes only once the new one is whole
            shutil.rmtree(target)
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target, summary


def model_card(summary: dict[str, Any], trial: TrialConfig, merge: bool, dtype: str, command: list[str],
               target: Path) -> str:
    from trainables.export import prompt_example

    base = trial.model.name_or_path
    prompt, example = prompt_example(trial, "#Person1#: Hi, Tom. Are you busy tomorrow afternoon?\n"
                                     "#Person2#: I think I am. Why?",
                                     "#Person1# asks whether Tom is busy tomorrow afternoon.")
    template, _ = prompt_example(trial, DIALOGUE_SLOT, "")
    metrics = "\n".join(f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |"
                        for k, v in summary["metrics"].items())
    hyperparameters = "\n".join(f"| {k} | {v} |" for k, v in summary["hyperparameters"].items())
    end = trial.prompt.end_marker
    if merge:
        load = f'''```python
from transformers import AutoModelForCausalLM, AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained("{target}")
model = AutoModelForCausalLM.from_pretrained("{target}")  # plain {dtype} weights: no peft, no bitsandbytes
```'''
        kind = (f"a plain transformers model: the 4-bit base dequantized, the LoRA adapter merged in (float32) "
                f"and rounded once to {dtype}. The adapter alone is in `adapter/`.")
    else:
        load = f'''```python
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

tokenizer = AutoTokenizer.from_pretrained("{target}")
base = AutoModelForCausalLM.from_pretrained(
    "{base}",
    quantization_config=BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="{trial.model.quant_type}"),
)
model = PeftModel.from_pretrained(base, "{target}")
```'''
        kind = "a LoRA adapter (peft) for the 4-bit base it was trained on."
    return f"""# QLoRA adapter from qlora-sweep: trial {summary['trial_id']}

This folder is {kind}

- **Base model:** `{base}` in 4-bit {trial.model.quant_type.upper()} (bitsandbytes) while it trained
- **Experiment:** `{summary['experiment']}`
- **Trial:** {summary['trial_id']} ({summary['status']}, {summary['rungs']} rungs; this is its checkpoint of rung {summary['best_rung']})
- **Made by:** `{' '.join(command)}`; the sweep's own config and command are in `qlora_sweep.yaml`

## Prompt format

The model summarizes a dialogue given in the recipe's prompt, which ends with the response marker;
it writes the summary, then `{end}`. Cut its output at `{end}`. `qlora-sweep predict` does all of this.

A prompt, exactly as the model must see it:

```text
{prompt}
```

and the training text the adapter learned from, for the same dialogue:

```text
{example}
```

## Use

{load}

```python
TEMPLATE = {template!r}
prompt = TEMPLATE.replace("{DIALOGUE_SLOT}", dialogue)  # the prompt above, exactly, for your dialogue
inputs = tokenizer(prompt, return_tensors="pt")
output = model.generate(**inputs, max_new_tokens={trial.evaluation.max_new_tokens}, do_sample=False)
summary = tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
summary = summary.split("{end}", 1)[0].strip()
```

Prompts longer than {trial.hyperparameters.max_length} tokens were shortened (the dialogue's end
cut) in training and scoring.

## Hyperparameters

| name | value |
| --- | --- |
{hyperparameters}

## Metrics at that rung (validation)

| metric | value |
| --- | --- |
{metrics}
"""


# --- predict -------------------------------------------------------------------------------

def check_predict_files(input_file: str, output: str | None, data: DataConfig) -> tuple[Path | None, list[dict]]:
    """The input's rows, read as `best --eval-file` reads its file (trainables.data.load_file), once
    every input problem has been ruled out; nothing is written before."""
    source = Path(expand_path(input_file))
    if not source.is_file():
        raise ConfigError(f"--input {input_file} does not exist")
    if source.suffix not in DATA_SUFFIXES:
        raise ConfigError(f"--input {input_file}: expected one of {', '.join(DATA_SUFFIXES)}")
    target = Path(expand_path(output)).resolve() if output else None
    if target is not None and target.suffix not in OUTPUT_SUFFIXES:
        raise ConfigError(f"--output {output}: expected one of {', '.join(OUTPUT_SUFFIXES)}")
    if target is not None and target.is_dir():
        raise ConfigError(f"--output {output} is a folder; give a file")
    if target is not None and not target.parent.is_dir():
        raise ConfigError(f"--output {output}: folder {target.parent} does not exist")
    rows, _ = load_file(source, data)
    if data.dialogue_field not in rows.column_names:
        raise ConfigError(f"--input {input_file}: no '{data.dialogue_field}' field (it has: "
                          f"{', '.join(sorted(rows.column_names)) or 'none'})")
    return target, rows.to_list()


def predict(experiment: str, input_file: str, output: str | None) -> tuple[Path | None, int, int]:
    """Every row of the input with its summary; returns (output file or None for stdout, rows, summarized)."""
    sweep = load_resolved_config(experiment)
    target, rows = check_predict_files(input_file, output, sweep.data)
    summary, trial = chosen_trial(experiment, None)
    field = sweep.data.dialogue_field
    wanted = [i for i, row in enumerate(rows) if isinstance(row.get(field), str) and row[field].strip()]
    from trainables.export import summarize  # heavy (torch): only once the inputs are known good

    with tqdm(total=len(wanted), desc="summarizing", unit="dialogue", file=sys.stderr) as bar:
        summaries = summarize(trial, summary["checkpoint"], [rows[i][field] for i in wanted], progress=bar.update)
    predicted: list[str | None] = [None] * len(rows)  # a row with no dialogue keeps its place, unsummarized
    for i, text in zip(wanted, summaries):
        predicted[i] = text
    out_rows = [{**row, PREDICTION_FIELD: text} for row, text in zip(rows, predicted)]
    write_rows(out_rows, target)
    return target, len(rows), len(wanted)


def write_rows(rows: list[dict], target: Path | None) -> None:
    if target is None:
        for row in rows:
            sys.stdout.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
        return
    staging = target.with_name(f".{target.name}.partial")
    try:
        if target.suffix == ".jsonl":
            staging.write_text("".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in rows),
                               encoding="utf-8")
        elif target.suffix == ".json":
            staging.write_text(json.dumps(rows, ensure_ascii=False, indent=1, default=str), encoding="utf-8")
        else:
            frame = pandas.DataFrame(rows)
            if target.suffix == ".csv":
                frame.to_csv(staging, index=False)
            else:
                frame.to_parquet(staging, index=False)
        os.replace(staging, target)
    finally:
        staging.unlink(missing_ok=True)
