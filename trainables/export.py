"""A trial's adapter as a model to take away (`qlora-sweep export`), and summaries of new
dialogues with it (`qlora-sweep predict`).

An export folder holds the LoRA adapter (peft's files), the tokenizer, the sweep's resolved
config, the trial's config and a README model card. With `merge`, it holds instead a plain
transformers model: the 4-bit base dequantized, the LoRA deltas added in float32 and the sum
rounded once to the chosen dtype (trainables.model.merged_dense_copy), loadable without peft or
bitsandbytes; the adapter then sits in `adapter/`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Callable

import torch
from peft import PeftModel

from trainables.checkpoint_files import TRIAL_RECORD, trial_record_text
from trainables.config import TrialConfig
from trainables.evaluation import RougeEvaluation
from trainables.model import checkpointing_rename_quiet, load_quantized_model, merged_dense_copy
from trainables.prompt import format_example, format_prompt, load_tokenizer

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin")
MERGE_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def load_adapted_model(trial: TrialConfig, checkpoint: str) -> Any:
    """The 4-bit base with the checkpoint's adapter on top, as the trial evaluated it."""
    with checkpointing_rename_quiet():
        return PeftModel.from_pretrained(load_quantized_model(trial.model), checkpoint)


def write_export(trial: TrialConfig, checkpoint: str, folder: Path, *, merge: bool, dtype: str,
                 sweep_config_text: str, card: str) -> None:
    """Write the export into `folder` (an empty staging folder: the caller moves it into place)."""
    adapter_dir = folder / "adapter" if merge else folder
    adapter_dir.mkdir(parents=True, exist_ok=True)
    for name in ADAPTER_FILES:
        if (Path(checkpoint) / name).is_file():
            shutil.copy2(Path(checkpoint) / name, adapter_dir / name)
    load_tokenizer(trial.model).save_pretrained(folder)
    if merge:
        merged = merged_dense_copy(load_adapted_model(trial, checkpoint)).to(MERGE_DTYPES[dtype])
        merged.config.dtype = MERGE_DTYPES[dtype]
        merged.save_pretrained(folder)
    (folder / "qlora_sweep.yaml").write_text(sweep_config_text, encoding="utf-8")
    # The checkpoint's record in its own layout, so that one reader reads both; the trial in it is
    # planned for this machine (its memory plan may differ from the sweep's), the step is the adapter's.
    saved_at = json.loads((Path(checkpoint) / TRIAL_RECORD).read_text(encoding="utf-8")).get("step")
    (folder / TRIAL_RECORD).write_text(trial_record_text(trial.model_dump(mode="json"), saved_at), encoding="utf-8")
    (folder / "README.md").write_text(card, encoding="utf-8")


def prompt_example(trial: TrialConfig, dialogue: str, summary: str) -> tuple[str, str]:
    """(the prompt a dialogue becomes, the whole training text with its summary)."""
    return format_prompt(trial.prompt, dialogue), format_example(trial.prompt, dialogue, summary)


def summarize(trial: TrialConfig, checkpoint: str, dialogues: list[str],
              progress: Callable[[int], None] = lambda done: None, chunk: int = 0) -> list[str]:
    """Summaries of `dialogues` by the checkpoint's adapter: the prompt, generation and cut at the
    end marker of the sweep's own scoring. `progress(n)` is called after each chunk of n dialogues."""
    tokenizer = load_tokenizer(trial.model)
    model = load_adapted_model(trial, checkpoint)
    evaluation = RougeEvaluation.for_trial(trial, tokenizer)
    prompts = evaluation.prompts(dialogues)
    step = chunk or max(evaluation.batch_size * 4, 1)
    summaries: list[str] = []
    for start in range(0, len(prompts), step):
        with checkpointing_rename_quiet():
            summaries += evaluation.summaries(model, prompts[start : start + step])
        progress(len(prompts[start : start + step]))
    return summaries
