"""The one typed sweep config: YAML in, validated frozen object out.

YAML keys equal field names; unknown keys fail. Built once on the driver and handed to
every trial, where the searched values are merged in by `TrialHyperparameters`.
This module is plain Python + pydantic: no Ray, no torch.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Annotated, Any, Callable, Literal, Union

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator

RECIPE_INTRO = (
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request."
)
RECIPE_INSTRUCTION = "### Instruct: Summarize the below conversation."
RECIPE_RESPONSE_MARKER = "### Output:\n"
RECIPE_END_MARKER = "### End"

METRICS_MODE = {
    "rouge1": "max",
    "rouge2": "max",
    "rougeL": "max",
    "rougeLsum": "max",
    "eval_loss": "min",
}


RESOLVED_CONFIG = "qlora_sweep.yaml"  # the resolved config, inside every experiment folder
DATA_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")  # the local data files qlora-sweep reads
RUNG_HISTORY = "qlora_sweep_rungs.jsonl"  # every rung reported so far, inside every adapter checkpoint


def is_uri(path: str) -> bool:
    """A storage URI (s3://, gs://, ...) rather than a local path."""
    return "://" in path


class ConfigError(ValueError):
    """A config, data or model problem, as one line that names the key or file."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


# --- search space -------------------------------------------------------------------


class Choice(Section):
    """Pick one of the listed values."""

    choice: list[Any] = Field(min_length=1)


class Range(Section):
    """A number between low and high (inclusive); log=true samples on a log scale."""

    low: float
    high: float
    log: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> "Range":
        if not self.low < self.high:
            raise ValueError(f"low ({self.low:g}) must be below high ({self.high:g})")
        if self.log and self.low <= 0:
            raise ValueError("a log-scale range needs low > 0")
        return self


def _parse_param(value: Any) -> Any:
    """A mapping is a Choice or a Range by its keys; anything else is a fixed value."""
    if not isinstance(value, dict):
        return value
    kind = Choice if "choice" in value else Range if ("low" in value or "high" in value) else None
    if kind is None:
        raise ValueError("expected a value, {choice: [...]} or {low: ..., high: ..., log: true|false}")
    try:
        return kind.model_validate(value)
    except ValidationError as exc:
        raise ValueError(_format_error(exc)) from None


Param = Annotated[Union[Choice, Range, float, int, str, list], BeforeValidator(_parse_param)]


def param_values(param: Param) -> list[Any]:
    """The extreme or listed values a parameter can take, for bound checks."""
    if isinstance(param, Choice):
        return list(param.choice)
    if isinstance(param, Range):
        return [param.low, param.high]
    return [param]


def absolute_if_local(value: str) -> str:
    """Local paths become absolute (trials run in another working directory); hub ids stay."""
    if value.startswith(("/", "./", "../", "~")) or value in (".", "..") or Path(value).exists():
        return str(Path(value).expanduser().resolve())
    return value


# --- sections -----------------------------------------------------------------------


class ModelConfig(Section):
    name_or_path: str = Field(
        description="Local folder of a Hugging Face model, or a hub id (needs a network)."
    )
    quant_type: Literal["nf4", "fp4"] = Field("nf4", description="bitsandbytes 4-bit data type.")
    compute_dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        "auto",
        description="Matmul dtype of the 4-bit layers; auto = bfloat16 on GPU, float32 on CPU "
        "(bf16 matmuls are ~15x slower on CPU).",
    )
    double_quant: bool = Field(False, description="Quantize the quantization constants too (saves ~0.4 bit/param).")
    trust_remote_code: bool = Field(False, description="Run model code from the model folder or hub. Off unless you trust it.")

    @field_validator("name_or_path")
    @classmethod
    def _absolute_local_path(cls, value: str) -> str:
        return absolute_if_local(value)


class DataConfig(Section):
    path: str | None = Field(
        None,
        description="Folder with <split>.jsonl|json|csv|parquet files, a single such file (used as train), "
        "or a hub dataset id. null = the small sample shipped with qlora-sweep.",
    )
    dialogue_field: str = "dialogue"
    summary_field: str = "summary"
    train_split: str = "train"
    validation_split: str | None = Field(
        "validation", description="When the data has no such split, validation_fraction of train is held out."
    )
    validation_fraction: float = Field(0.1, gt=0, lt=1)
    max_train_examples: int | None = Field(None, ge=1, description="Use only the first N training examples.")
    max_validation_examples: int = Field(
        100, ge=1, description="Validation examples scored for loss and ROUGE each rung (first N)."
    )
    seed: int = Field(0, description="Seed of the validation hold-out split.")
    id_field: str = Field("id", description="Rows repeating an id already seen are bad rows (when the field exists).")
    bad_rows: Literal["drop", "fail"] = Field(
        "drop",
        description="Rows with an empty or non-string dialogue/summary, invalid UTF-8, broken JSON or a repeated "
        "id: drop them (counted and reported) or fail before the sweep starts.",
    )
    max_dialogue_chars: int = Field(
        200_000, ge=1, description="Longer dialogues (~50k tokens) are cut to this many characters before tokenizing."
    )
    reuse_tokenized: bool = Field(
        True,
        description="Trials needing the same (data, tokenizer, prompt, max_length) reuse the first one's tokenized "
        "copy from datasets' on-disk cache; false makes every trial tokenize again (a benchmark baseline).",
    )

    @field_validator("path")
    @classmethod
    def _absolute_local_path(cls, value: str | None) -> str | None:
        return None if value is None else absolute_if_local(value)


class PromptConfig(Section):
    """Parts joined by a blank line: intro, instruction, dialogue, response_marker + summary, end_marker."""

    intro: str = "\n" + RECIPE_INTRO
    instruction: str = RECIPE_INSTRUCTION
    response_marker: str = RECIPE_RESPONSE_MARKER
    end_marker: str = RECIPE_END_MARKER

    @field_validator("response_marker", "end_marker")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank: generation is cut at it")
        return value


def _auto_or(kind: type) -> Callable[[Any], Any]:
    """`auto`, or a value of `kind`, with one message for anything else."""
    def check(value: Any) -> Any:
        if value == "auto" or (isinstance(value, kind) and (kind is bool or not isinstance(value, bool))):
            return value
        raise ValueError(f"must be auto or {'true/false' if kind is bool else 'a whole number'}, got {value!r}")
    return check


AutoOrBool = Annotated[Union[bool, Literal["auto"]], BeforeValidator(_auto_or(bool))]
AutoOrInt = Annotated[Union[int, Literal["auto"]], BeforeValidator(_auto_or(int))]


class TrainingConfig(Section):
    steps_per_rung: int = Field(20, ge=1, description="Optimizer steps between two reports (one ASHA rung).")
    micro_batch_size: int = Field(4, ge=1)
    gradient_accumulation_steps: int = Field(1, ge=1)
    warmup_steps: int = Field(0, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = Field(
        "linear", description="Over the full budget, max_rungs x steps_per_rung steps."
    )
    optimizer: str = Field("adamw_torch", description="Any transformers `optim` name, e.g. paged_adamw_8bit on GPU.")
    gradient_checkpointing: AutoOrBool = Field(
        "auto",
        description="Recompute activations: less memory, ~25% more compute. auto: on only when one micro-batch's "
        "activations would not fit the trial's memory (resources.gpu_memory_gb); off on CPU.",
    )
    padding_free: bool = Field(
        True,
        description="Train on each micro-batch as one row without padding; attention stays inside each example "
        "(position ids -> block-diagonal mask). Same examples per step, no compute spent on padding.",
    )
    fused_lm_head: AutoOrBool = Field(
        "auto",
        description="TRL's chunked LM head: the loss without materializing the logits. auto: on a GPU, where its "
        "Triton kernel trained the 8B shape 1.4x faster in 36% less memory than full logits; off on CPU, where its "
        "torch fallback made a step 2.5x slower (BENCHMARKS.md).",
    )
    retry_on_oom: bool = Field(
        True,
        description="On CUDA out-of-memory, retry the trial once with half the micro-batch and twice the "
        "gradient accumulation (the same effective batch), from its last checkpoint.",
    )
    seed: int = 42


AUTO_MIN_RUNG_EXAMPLES = 64


class EvaluationConfig(Section):
    max_new_tokens: int = Field(96, ge=1, description="Longest generated summary scored by ROUGE.")
    batch_size: AutoOrInt = Field(
        "auto",
        description="Dialogues per batched greedy generation. auto: as many as the KV cache fits in the trial's "
        "memory on GPU (at most 128), 16 on CPU.",
    )
    merged_copy: AutoOrBool = Field(
        "auto",
        description="Generate ROUGE's summaries through a dense copy of the adapted model in the compute dtype "
        "(4-bit weights dequantized, LoRA merged), built for each evaluation and freed after, instead of "
        "dequantizing every weight for every new token. Costs 2 bytes per parameter (bf16) while it lives. auto: "
        "on a GPU when the copy fits the trial's memory with room for 32 dialogues at once (on an H100 it halved "
        "the 1B shape's evaluation time); off on CPU.",
    )
    rung_examples: list[int] | Literal["auto", "all"] = Field(
        "auto",
        description="Validation dialogues scored by ROUGE at rungs 1, 2, ...: a list (later rungs score all), "
        "auto (the last rung all, each earlier rung half the next, at least 64), or all. The subset is the same "
        "fixed-seed sample for every trial, so ASHA compares trials at a rung on the same dialogues; the last "
        "rung and the leaderboard use the whole validation set.",
    )

    @field_validator("batch_size")
    @classmethod
    def _positive_batch(cls, value: int | str) -> int | str:
        if value != "auto" and value < 1:
            raise ValueError(f"must be at least 1 or auto, got {value}")
        return value

    @field_validator("rung_examples")
    @classmethod
    def _positive_counts(cls, value: list[int] | str) -> list[int] | str:
        if isinstance(value, list):
            if not value or any(n < 1 for n in value):
                raise ValueError(f"each count must be at least 1, got {value}")
            if value != sorted(value):
                raise ValueError(f"counts must not shrink from one rung to the next, got {value}")
        return value

    def examples_at(self, rung: int, max_rungs: int, available: int) -> int:
        """Validation dialogues ROUGE scores at this rung (1-based); the last rung scores them all."""
        if self.rung_examples == "all" or rung >= max_rungs:
            return available
        if self.rung_examples == "auto":
            return min(available, max(AUTO_MIN_RUNG_EXAMPLES, math.ceil(available / 2 ** (max_rungs - rung))))
        return min(available, self.rung_examples[rung - 1]) if rung <= len(self.rung_examples) else available


def _check_numbers(param: Param, rule: str, holds: Callable[[float], bool], whole: bool = False) -> Param:
    for value in param_values(param):
        number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if not number or (whole and value != int(value)):
            raise ValueError(f"values must be {'whole numbers' if whole else 'numbers'}, got {value!r}")
        if not holds(value):
            raise ValueError(f"values must be {rule}, got {value!r}")
    return param


HYPERPARAMETERS = ("lora_r", "lora_alpha", "learning_rate", "max_length", "lora_dropout", "target_modules")


def modules_to_text(option: str | list[str]) -> str:
    """Optuna's categorical values must be scalars: module lists travel as 'q_proj,v_proj'."""
    return option if isinstance(option, str) else ",".join(option)


class SearchConfig(Section):
    lora_r: Param = Field(Choice(choice=[8, 16, 32]))
    lora_alpha: Param = Field(Choice(choice=[16, 32, 64]))
    learning_rate: Param = Field(Range(low=5e-5, high=5e-4, log=True))
    max_length: Param = Field(Choice(choice=[256, 512]))
    lora_dropout: Param = Field(0.05)
    target_modules: Param = Field(
        "all-linear", description="'all-linear', a list of module names, or {choice: [...]} of those."
    )
    num_trials: int = Field(8, ge=1)
    max_concurrent_trials: int = Field(2, ge=1)
    seed: int = Field(0, description="Seed of Optuna's TPE sampler.")

    @property
    def searched(self) -> dict[str, Param]:
        """Parameters given as a choice or range: these Optuna picks."""
        return {name: getattr(self, name) for name in HYPERPARAMETERS if isinstance(getattr(self, name), (Choice, Range))}

    @property
    def fixed(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in HYPERPARAMETERS if name not in self.searched}

    @model_validator(mode="after")
    def _something_to_search(self) -> "SearchConfig":
        if not self.searched:
            raise ValueError("nothing to search: give at least one hyperparameter a {choice: [...]} or {low, high}")
        return self

    @field_validator("lora_r", "max_length")
    @classmethod
    def _positive_whole(cls, param: Param) -> Param:
        return _check_numbers(param, "> 0", lambda v: v > 0, whole=True)

    @field_validator("lora_alpha", "learning_rate")
    @classmethod
    def _positive(cls, param: Param) -> Param:
        return _check_numbers(param, "> 0", lambda v: v > 0)

    @field_validator("lora_dropout")
    @classmethod
    def _dropout_range(cls, param: Param) -> Param:
        return _check_numbers(param, "in [0, 1)", lambda v: 0 <= v < 1)

    @field_validator("target_modules")
    @classmethod
    def _modules(cls, param: Param) -> Param:
        options = param.choice if isinstance(param, Choice) else [param]
        for option in options:
            if option == "all-linear":
                continue
            if not (isinstance(option, list) and option and all(isinstance(m, str) and m for m in option)):
                raise ValueError(f"each option must be 'all-linear' or a list of module names, got {option!r}")
        return param


class SchedulerConfig(Section):
    metric: Literal["rouge1", "rouge2", "rougeL", "rougeLsum", "eval_loss"] = "rougeL"
    mode: Literal["max", "min"] | None = Field(None, description="Derived from the metric when left out.")
    max_rungs: int = Field(4, ge=1, description="Rungs a trial runs at most (ASHA max_t).")
    grace_period: int = Field(1, ge=1, description="Rungs every trial runs before it can be stopped.")
    reduction_factor: float = Field(2.0, gt=1)

    @model_validator(mode="after")
    def _consistent(self) -> "SchedulerConfig":
        if self.grace_period > self.max_rungs:
            raise ValueError(
                f"grace_period ({self.grace_period}) is beyond the last rung (max_rungs={self.max_rungs})"
            )
        expected = METRICS_MODE[self.metric]
        if self.mode is not None and self.mode != expected:
            raise ValueError(f"mode '{self.mode}' would pick the worst {self.metric}; use '{expected}'")
        return self

    @property
    def resolved_mode(self) -> str:
        return self.mode or METRICS_MODE[self.metric]


class ResourcesConfig(Section):
    cpus_per_trial: float = Field(1.0, gt=0)
    gpus_per_trial: float | Literal["auto"] = Field(
        0.0,
        description="GPUs per trial. Fractions (e.g. 0.5) put several trials on one GPU; auto gives each trial "
        "the share of a GPU its predicted peak memory needs (search.packing), so trials pack by memory.",
    )
    gpu_memory_gb: float | None = Field(
        None, gt=0,
        description="GPU memory one trial may plan for (automatic checkpointing and evaluation batch). Default: "
        "the GPU's memory times gpus_per_trial (capped at one GPU); with gpus_per_trial auto, its predicted peak.",
    )

    @field_validator("gpus_per_trial", mode="before")
    @classmethod
    def _whole_above_one(cls, value: Any) -> Any:
        if value == "auto":
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ValueError(f"must be auto or a number of GPUs (0 or more), got {value!r}")
        if value > 1 and value != int(value):
            raise ValueError(f"above 1 GPU only whole numbers are allowed, got {value}")
        return value


class SweepConfig(Section):
    name: str = Field(description="Experiment name: the folder under storage.")
    storage: str = Field("~/qlora-sweep-results", description="Local path or any URI Ray accepts (s3://, gs://).")
    checkpoints_kept: int = Field(2, ge=1, description="Best adapter checkpoints kept per trial, by the metric.")
    trial_retries: int = Field(1, ge=0, description="Times Tune restarts a crashed trial from its checkpoint.")
    model: ModelConfig
    data: DataConfig = DataConfig()
    prompt: PromptConfig = PromptConfig()
    training: TrainingConfig = TrainingConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    search: SearchConfig = SearchConfig()
    scheduler: SchedulerConfig = SchedulerConfig()
    resources: ResourcesConfig = ResourcesConfig()

    @field_validator("name")
    @classmethod
    def _safe_name(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", value):
            raise ValueError("use letters, digits, '.', '_' and '-' only (it becomes a folder name)")
        return value

    @property
    def experiment_path(self) -> str:
        """Where this sweep's results live: storage/name (local paths expanded)."""
        if is_uri(self.storage):
            return self.storage.rstrip("/") + "/" + self.name
        return str(Path(self.storage).expanduser().resolve() / self.name)

    @property
    def total_steps(self) -> int:
        return self.scheduler.max_rungs * self.training.steps_per_rung


class TrialHyperparameters(Section):
    """The values Optuna chose for one trial: the one place they meet the sweep config."""

    lora_r: int = Field(ge=1)
    lora_alpha: float = Field(gt=0)
    learning_rate: float = Field(gt=0)
    max_length: int = Field(ge=1)
    lora_dropout: float = Field(ge=0, lt=1)
    target_modules: str | list[str]

    @classmethod
    def resolve(cls, search: SearchConfig, trial_config: dict[str, Any]) -> "TrialHyperparameters":
        """Fixed values from the sweep config, overlaid with what the searcher chose."""
        values = {**search.fixed, **{k: v for k, v in trial_config.items() if k in HYPERPARAMETERS}}
        modules = modules_to_text(values["target_modules"])
        values["target_modules"] = modules if modules == "all-linear" else modules.split(",")
        for name in ("lora_r", "max_length"):
            values[name] = int(values[name])
        return cls.model_validate(values)


# --- loading --------------------------------------------------------------------------


def _format_error(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        loc = ".".join(str(p) for p in item["loc"] if not str(p).startswith(("function-", "union[")))
        # Union members add their class name to the path; keep only field names.
        loc = re.sub(r"\.(Choice|Range|float|int|str|list\[any\])(?=\.|$)", "", loc)
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown key"
        parts.append(f"{loc}: {message}" if loc else message)
    # A union reports one error per member; the first few say enough.
    unique = list(dict.fromkeys(parts))
    return "; ".join(unique[:3])


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `section.key=value` strings; values are parsed as YAML (8 -> int, [1,2] -> list)."""
    merged = yaml.safe_load(yaml.safe_dump(raw)) or {}
    for override in overrides:
        key, sep, text = override.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {override!r}: expected section.key=value")
        path = key.strip().split(".")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            raise ConfigError(f"--set {key}: value {text!r} is not valid YAML") from None
        node = merged
        for part in path[:-1]:
            child = node.get(part)
            if child is None or not isinstance(child, dict):
                child = {}
                node[part] = child
            node = child
        node[path[-1]] = value
    return merged


def load_config(path: str | Path, overrides: list[str] | None = None) -> SweepConfig:
    """Read, override and validate a sweep config; any problem raises ConfigError (one line)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{where}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    merged = apply_overrides(raw, overrides or [])
    try:
        return SweepConfig.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {_format_error(exc)}") from None
