"""The sweep's config schema: YAML in, one validated, frozen `SweepConfig` out.

It composes the trial's own sections (trainables/config.py: model, data, prompt, training,
evaluation) with what only the driver reads: the experiment's name and storage, the search space,
the ASHA scheduler and the resources each trial asks for. YAML keys equal field names; unknown
keys fail; every field says its unit, its effect and what `auto` does (the README's config table
is generated from these descriptions: scripts/config_table.py).
"""

from __future__ import annotations

import difflib
import math
import re
from pathlib import Path
from typing import Annotated, Any, Callable, Literal, Union

import yaml
from pydantic import BeforeValidator, Field, ValidationError, field_validator, model_validator

from search.models import BUILTIN_MODELS, builtin_model_path
from trainables.config import (
    DataConfig, EvaluationConfig, ModelConfig, PromptConfig, Section, TrainingConfig, TrialHyperparameters,
    expand_path,
)
from trainables.errors import ConfigError
from trainables.metrics import METRIC_MODES

# --- search space -------------------------------------------------------------------


class Choice(Section):
    """Pick one of the listed values."""

    choice: list[Any] = Field(min_length=1, description="The values Optuna chooses among.")


class Range(Section):
    """A number between low and high (inclusive); log=true samples on a log scale."""

    low: float = Field(description="Smallest value (inclusive).")
    high: float = Field(description="Largest value (inclusive).")
    log: bool = Field(False, description="Sample on a log scale (low > 0).")

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
        raise ValueError(_format_error(exc)[0]) from None


Param = Annotated[Union[Choice, Range, float, int, str, list], BeforeValidator(_parse_param)]


def param_values(param: Param) -> list[Any]:
    """The extreme or listed values a parameter can take, for bound checks."""
    if isinstance(param, Choice):
        return list(param.choice)
    if isinstance(param, Range):
        return [param.low, param.high]
    return [param]


def _check_numbers(param: Param, rule: str, holds: Callable[[float], bool], whole: bool = False) -> Param:
    if isinstance(param, list):
        raise ValueError(f"got the list {_flow(param)}: to search among these values, write {{choice: {_flow(param)}}}")
    for value in param_values(param):
        number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if not number or (whole and value != int(value)):
            raise ValueError(f"values must be {'whole numbers' if whole else 'numbers'}, got {value!r}")
        if not holds(value):
            raise ValueError(f"values must be {rule}, got {value!r}")
    return param


HYPERPARAMETERS = tuple(TrialHyperparameters.model_fields)  # what a trial receives
ALPHA_RATIO = "lora_alpha_ratio"  # searched in place of lora_alpha: the trial gets lora_alpha = ratio x lora_r
SEARCHABLE = (*HYPERPARAMETERS, ALPHA_RATIO)  # what a sweep may search


class SearchConfig(Section):
    """Each hyperparameter is a fixed value, {choice: [...]} or {low: x, high: y, log: true|false}
    (both ends inclusive); Optuna searches the ones given as a choice or a range."""

    lora_r: Param = Field(
        Choice(choice=[16, 32, 64, 128]),
        description="LoRA rank, a whole number: more trainable parameters and memory as it grows. The default "
        "brackets QLoRA's r=64 on every linear layer from both sides.",
    )
    lora_alpha: Param | None = Field(
        None,
        description="LoRA alpha (> 0): the adapter's update is scaled by lora_alpha / lora_r. Give it or "
        "lora_alpha_ratio, not both; giving it turns the default lora_alpha_ratio off.",
    )
    lora_alpha_ratio: Param | None = Field(
        Choice(choice=[0.5, 1, 2, 4]),
        description="lora_alpha as a multiple of lora_r (> 0): searched with the rank, each trial gets "
        "lora_alpha = lora_alpha_ratio x lora_r, so the update's scale (the ratio) is searched apart from its "
        "size. The default spans the common practice (alpha = r/2 to 4r).",
    )
    learning_rate: Param = Field(
        Range(low=3e-5, high=3e-3, log=True),
        description="Peak learning rate (> 0). The default spans two decades around QLoRA's usual 1e-4 to 1e-3.",
    )
    max_length: Param = Field(
        Choice(choice=[256, 512]),
        description="Tokens per training example, prompt and summary together: longer dialogues "
        "are cut, never the summary. Must exceed the prompt scaffolding; memory grows with it.",
    )
    lora_dropout: Param = Field(0.05, description="Dropout on LoRA's input, in [0, 1).")
    loraplus_lr_ratio: Param = Field(
        1,
        description="LoRA+ (peft's create_loraplus_optimizer): lora_B trains at learning_rate x this, lora_A at "
        "learning_rate; >= 1. 1 is plain LoRA, one rate for both; the LoRA+ paper suggests about 16, with a "
        "learning_rate about half of plain LoRA's. Give {choice: [1, 4, 16]} to search it. Measured on SmolLM2-135M and "
        "DialogSum (one H100, 5 sweeps a seed at 4 and 16): the test ROUGE-L over the recipe rose on one seed and fell "
        "on the other in every sweep, +2.93 points on average against plain LoRA's +2.95; trials diverged where "
        "learning_rate x alpha/r x this passed 1.4e-2 to 1.9e-2: lower the learning_rate range with it "
        "(benchmarks/results/2026-12-06-loraplus, 2026-12-07-loraplus).",
    )
    target_modules: Param = Field(
        "all-linear",
        description="Modules LoRA adapts: 'all-linear', a list of module names, or {choice: [...]} of those.",
    )
    num_trials: int = Field(8, ge=1, description="Trials in the sweep: configurations Optuna proposes.")
    max_concurrent_trials: int | Literal["auto"] = Field(
        "auto",
        description="Trials running at once, at most (fewer when the resources they ask for run out). auto: as "
        "many as the cluster holds when the sweep starts: its CPUs over cpus_per_trial, its GPUs over each "
        "trial's share (the largest trial's, with gpus_per_trial auto), at most num_trials. run's opening lines "
        "say what bound it, and when a number given here leaves GPUs idle.",
    )
    seed: int = Field(0, description="Seed of Optuna's TPE sampler: the same seed proposes the same trials.")

    @property
    def searched(self) -> dict[str, Param]:
        """Parameters given as a choice or range: these Optuna picks."""
        return {name: getattr(self, name) for name in SEARCHABLE if isinstance(getattr(self, name), (Choice, Range))}

    @property
    def fixed(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in SEARCHABLE
                if name not in self.searched and getattr(self, name) is not None}

    @model_validator(mode="before")
    @classmethod
    def _alpha_given_replaces_ratio(cls, values: Any) -> Any:
        """A config that names lora_alpha (every config before lora_alpha_ratio) searches alpha as given."""
        if isinstance(values, dict) and values.get("lora_alpha") is not None and ALPHA_RATIO not in values:
            values = {**values, ALPHA_RATIO: None}
        return values

    @model_validator(mode="after")
    def _one_alpha(self) -> "SearchConfig":
        if (self.lora_alpha is None) == (self.lora_alpha_ratio is None):
            raise ValueError("give lora_alpha or lora_alpha_ratio, not both" if self.lora_alpha is not None
                             else "give lora_alpha or lora_alpha_ratio")
        return self

    @model_validator(mode="after")
    def _something_to_search(self) -> "SearchConfig":
        if not self.searched:
            raise ValueError("nothing to search: give at least one hyperparameter a {choice: [...]} or {low, high}")
        return self

    @field_validator("max_concurrent_trials", mode="before")
    @classmethod
    def _auto_or_at_least_one(cls, value: Any) -> Any:
        if value == "auto":
            return value
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"must be auto or a whole number of trials (1 or more), got {value!r}")
        return value

    @field_validator("lora_r", "max_length")
    @classmethod
    def _positive_whole(cls, param: Param) -> Param:
        return _check_numbers(param, "> 0", lambda v: v > 0, whole=True)

    @field_validator("lora_alpha", "lora_alpha_ratio", "learning_rate")
    @classmethod
    def _positive(cls, param: Param | None) -> Param | None:
        return None if param is None else _check_numbers(param, "> 0", lambda v: v > 0)

    @field_validator("loraplus_lr_ratio")
    @classmethod
    def _loraplus_ratio(cls, param: Param) -> Param:
        return _check_numbers(param, ">= 1 (lora_B's rate over lora_A's; 1 is plain LoRA)", lambda v: v >= 1)

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
    metric: Literal[tuple(METRIC_MODES)] = Field(
        "rougeL",
        description="What ASHA and `best` rank trials by: rouge1, rouge2, rougeL, rougeLsum (validation ROUGE F1, "
        "higher is better) or eval_loss (validation loss, lower is better). ROUGE of greedy summaries is noisy: on "
        "an H200 (SmolLM2, DialogSum, 100 dialogues) trials of the same hyperparameters, their validation losses "
        "within 0.003, spread 0.013-0.015 in ROUGE-L from training's nondeterminism alone; more dialogues "
        "(data.max_validation_examples) narrow it, eval_loss barely has it but ranks likelihood, not summaries.",
    )
    mode: Literal["max", "min"] | None = Field(
        None, description="max or min; derived from the metric when left out; one that contradicts it is an error."
    )
    max_rungs: int = Field(
        4, ge=1, description="Rungs a trial runs at most (ASHA's max_t); the trial's schedule spans all of them."
    )
    grace_period: int = Field(1, ge=1, description="Rungs every trial runs before ASHA may stop it.")
    reduction_factor: float = Field(
        2.0, gt=1, description="ASHA keeps about 1/reduction_factor of the trials at each rung."
    )

    @model_validator(mode="after")
    def _consistent(self) -> "SchedulerConfig":
        if self.grace_period > self.max_rungs:
            raise ValueError(
                f"grace_period ({self.grace_period}) is beyond the last rung (max_rungs={self.max_rungs})"
            )
        expected = METRIC_MODES[self.metric]
        if self.mode is not None and self.mode != expected:
            raise ValueError(f"mode '{self.mode}' would pick the worst {self.metric}; use '{expected}'")
        return self

    @property
    def resolved_mode(self) -> str:
        return self.mode or METRIC_MODES[self.metric]


class ResourcesConfig(Section):
    cpus_per_trial: float = Field(1.0, gt=0, description="CPUs Ray reserves for each trial.")
    gpus_per_trial: float | Literal["auto"] = Field(
        0.0,
        description="GPUs per trial: fractions (0.5) share a GPU, whole numbers above 1 spread a model over "
        "several. auto: each trial asks for the share of a GPU (in hundredths) that its predicted peak memory "
        "needs (NF4 weights, LoRA with gradients and AdamW state, one micro-batch's activations, recomputed "
        "where training.gradient_checkpointing's auto finds more trials at once train more, and 2 GiB headroom), sized against the smallest GPU in the "
        "cluster, so trials pack by memory; a search space whose largest trial cannot fit one GPU is refused "
        "before any trial starts; without GPUs, trials run on CPUs.",
    )
    reuse_workers: bool = Field(
        True,
        description="true: a trial that ends hands its worker process to the next trial asking for the same "
        "resources (Tune's reuse_actors), with its imports, CUDA context, tokenizer, tokenized data and 4-bit "
        "base model loaded, and the thread its trials train in (CUDA libraries cache per thread: cuDNN's attention "
        "graphs, which each trial in a new thread built again, 2-9 s of its first rung on an H200); the new trial "
        "takes the last one's LoRA off and draws its own (it trains as in a fresh process). With gpus_per_trial "
        "auto every trial then asks for the share the search space's largest trial needs, so that any worker "
        "fits any trial. false: a fresh process per trial, each trial's own share.",
    )
    preload_libraries: bool | Literal["trial", "auto"] = Field(
        "auto",
        description="What a sweep that starts a local Ray of its own has Ray import in each idle worker process "
        "as it starts, while the driver prepares the sweep, so that a trial's fresh worker has it when the trial "
        "begins (on an H200 machine a fresh worker's imports took 15-19 s of its first rung's 36-42 s, "
        "2026-12-05). Ray then starts as many idle workers as trials may run at once (the trials, the CPUs at "
        "cpus_per_trial, the GPUs at a numeric gpus_per_trial, search.max_concurrent_trials where a number), not "
        "one per CPU, so that fewer import at once. false: nothing. true: what asks nothing of CUDA on import "
        "(torch, transformers' model code, accelerate, datasets, ROUGE, Tune: trainables.warm.CUDA_SAFE_IMPORTS), "
        "safe on any machine; the trial "
        "still imports peft, TRL and bitsandbytes (4-5 s there). trial: everything a trial imports "
        "(trainables.trial); bitsandbytes asks CUDA about the GPUs on import and a process keeps the GPUs it "
        "saw then, so only on a machine with at most one GPU whose trials ask for a share of it "
        "(gpus_per_trial not 0); refused elsewhere. On an H100 (2026-12-06, seed 1 of the sweep benchmark, off, "
        "trial, trial, off) trial cut a fresh worker's start from 17 s to 3.5 s and its first rung to 1.19-1.28x a "
        "later one (2.23-2.32x off), though the first results came 49-52 s after the launch against 51-57 s: the "
        "imports moved before the trial began. auto (the default): trial where it is allowed and a GPU's trials gain "
        "it (a machine of one GPU, gpus_per_trial not 0), nothing elsewhere: on a 2-core CPU machine (2026-12-06, the "
        "quickstart, 3 rounds by turns) the workers' imports shared the cores with the driver's start and the "
        "quickstart took 134.5 s with trial and 134.2 s with true against 123.8 s off (medians), its first result "
        "at 56 and 58 s against 50 s, slower in every round. On seed 0 (2026-12-06, an H100, off, auto, "
        "auto, off) auto's fresh first rungs took 1.23x and 1.23x a later one against 2.22x and 1.73x, and idle "
        "workers that had imported the whole trial held no GPU memory (benchmarks/idle_worker_memory.py: 6 at "
        "once, no CUDA context among them; 618 MiB each once a context is made). On a cluster the head's "
        "`ray start --system-config` sets "
        "the same (preload_python_modules, worker_maximum_startup_concurrency); joining one, this has no effect.",
    )
    ray_dashboard: bool = Field(
        True,
        description="A sweep that starts a local Ray of its own also starts Ray's dashboard (http://127.0.0.1:8265 "
        "while it runs) where its packages are installed (ray[default]; without them Ray starts without it). "
        "false: none, and no port opened: about 3 s less to start and stop a sweep on a 2-core "
        "machine (2.0 s of ray.init, 1.0 s of shutdown). Inside `ray job submit` or beside `ray start` the "
        "cluster's own dashboard is used and this has no effect.",
    )
    gpu_memory_gb: float | None = Field(
        None, gt=0,
        description="GPU memory (GiB) one trial plans within (recompute, merged copy, generation batch). Default: "
        "one GPU's memory times gpus_per_trial (at most one GPU's); with gpus_per_trial auto, its predicted peak.",
    )

    @field_validator("preload_libraries", mode="before")
    @classmethod
    def _auto_bool_or_trial(cls, value: Any) -> Any:
        if isinstance(value, bool) or value in ("trial", "auto"):
            return value
        raise ValueError(f"must be auto, true, false or trial, got {value!r}")

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
    name: str = Field(
        description="Experiment name: the folder `<storage>/<name>`; letters, digits, '.', '_' and '-'. A name "
        "already used is refused unless the sweep is resumed."
    )
    storage: str = Field(
        "~/qlora-sweep-results",
        description="Where experiment folders go: a local path or any URI Ray accepts (s3://, gs://). On a "
        "cluster, a bucket or a file system every node mounts. validate and run check that it can be written "
        "before anything starts.",
    )
    checkpoints_kept: int = Field(
        2, ge=1,
        description="Adapter checkpoints kept per trial, the best by the metric; each is the adapter and its "
        "optimizer state, never the base model.",
    )
    trial_retries: int = Field(1, ge=0, description="Times Tune restarts a crashed trial from its last checkpoint. "
                               "A kept worker (resources.reuse_workers) that died before the next trial began in it "
                               "costs that trial one of them.")
    model: ModelConfig = Field(description="The base model (trainables/config.py).")
    data: DataConfig = Field(DataConfig(), description="The dialogues (trainables/config.py).")
    prompt: PromptConfig = Field(PromptConfig(), description="The recipe's prompt (trainables/config.py).")
    training: TrainingConfig = Field(TrainingConfig(), description="One trial's training (trainables/config.py).")
    evaluation: EvaluationConfig = Field(EvaluationConfig(), description="ROUGE at each rung (trainables/config.py).")
    search: SearchConfig = Field(SearchConfig(), description="The search space and its searcher.")
    scheduler: SchedulerConfig = Field(SchedulerConfig(), description="ASHA: what it ranks by, and its rungs.")
    resources: ResourcesConfig = Field(ResourcesConfig(), description="What each trial asks Ray for.")

    @field_validator("name")
    @classmethod
    def _safe_name(cls, value: str) -> str:
        if not is_experiment_name(value):
            raise ValueError("use letters, digits, '.', '_' and '-' only (it becomes a folder name)")
        return value

    @field_validator("storage")
    @classmethod
    def _expanded_storage(cls, value: str) -> str:
        return value if "://" in value else expand_path(value)

    @model_validator(mode="before")
    @classmethod
    def _builtin_model_path(cls, values: Any) -> Any:
        """A built-in model's short name (smollm2-135m-instruct) stands for its folder in the cache."""
        model = values.get("model") if isinstance(values, dict) else None
        name = model.get("name_or_path") if isinstance(model, dict) else None
        if isinstance(name, str) and name.lower() in BUILTIN_MODELS:
            values = {**values, "model": {**model, "name_or_path": str(builtin_model_path(name))}}
        return values


def is_experiment_name(text: str) -> bool:
    return re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", text) is not None


# --- loading --------------------------------------------------------------------------


def _flow(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True).strip()


def known_keys(schema: type[Section] | None = None, prefix: str = "") -> list[str]:
    """Every key a sweep's YAML may hold, dotted (sections and their fields)."""
    keys = []
    for name, field in (schema or SweepConfig).model_fields.items():
        keys.append(prefix + name)
        if isinstance(field.annotation, type) and issubclass(field.annotation, Section) \
                and field.annotation not in (Choice, Range):
            keys += known_keys(field.annotation, f"{prefix}{name}.")
    return keys


def _did_you_mean(key: str) -> str:
    match = difflib.get_close_matches(key, known_keys(), n=1, cutoff=0.6)
    return f"; did you mean {match[0]}?" if match else ""


def _format_error(error: ValidationError, overrides: dict[str, str] | None = None) -> tuple[str, bool]:
    """The first few problems as one line, and whether the first came from a --set (`overrides`:
    dotted key -> the --set text)."""
    parts, from_set = [], []
    for item in error.errors():
        loc = ".".join(str(p) for p in item["loc"] if not str(p).startswith(("function-", "union[")))
        # Union members add their class name to the path; keep only field names.
        loc = re.sub(r"\.(Choice|Range|float|int|str|list\[any\])(?=\.|$)", "", loc)
        given = next((key for key in overrides or {} if key == loc or key.startswith(loc + ".")
                      or loc.startswith(key + ".")), None) if loc else None
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            # An unknown section written with --set shows as that section: name the whole key given.
            loc = given if given and given.startswith(loc + ".") else loc
            message = "unknown key" + _did_you_mean(loc)
        part = f"{loc}: {message}" if loc else message
        parts.append(f"--set {overrides[given]}: {part}" if given else part)
        from_set.append(given is not None)
    # A union reports one error per member; the first few say enough.
    unique = list(dict.fromkeys(parts))
    return "; ".join(unique[:3]), bool(from_set) and from_set[0]


def parse_overrides(overrides: list[str]) -> dict[str, str]:
    """`section.key=value` strings by their dotted key."""
    parsed = {}
    for override in overrides:
        key, sep, _ = override.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {override!r}: expected section.key=value")
        parsed[key.strip()] = override
    return parsed


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `section.key=value` strings; values are parsed as YAML (8 -> int, [1,2] -> list)."""
    merged = yaml.safe_load(yaml.safe_dump(raw)) or {}
    for key, override in parse_overrides(overrides).items():
        text = override.partition("=")[2]
        path = key.split(".")
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
        raise ConfigError(f"{path}: the file is empty; a sweep needs at least name and model.name_or_path "
                          "(configs/quickstart.yaml is one to start from)")
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    overrides = overrides or []
    return validate_sweep(apply_overrides(raw, overrides), where=str(path), overrides=parse_overrides(overrides))


def validate_sweep(values: dict[str, Any], where: str, overrides: dict[str, str] | None = None) -> SweepConfig:
    """The typed config of these values, or a ConfigError naming `where` (or the --set) and the first problems."""
    try:
        return SweepConfig.model_validate(values)
    except ValidationError as exc:
        message, from_set = _format_error(exc, overrides)
        raise ConfigError(message if from_set else f"{where}: {message}") from None
