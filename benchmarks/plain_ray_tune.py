"""The QLoRA sweep as a practitioner glues it by hand with Ray Tune: the baseline arm of
benchmarks/sweep_benchmark.py.

    python benchmarks/plain_ray_tune.py CONFIG --name NAME --storage DIR [--set KEY=VALUE ...]

It reads the same sweep YAML (model, data, search space, number of trials and trials at a time, ASHA
settings, seeds, learning-rate schedule) and uses none of qlora-sweep's trial code: a function
trainable loads the model in 4-bit NF4 and attaches LoRA with peft, trains each rung with padded
micro-batches and AdamW (peft's LoRA+ optimizer where search.loraplus_lr_ratio is not 1) on the
config's learning-rate schedule (transformers' get_scheduler over the whole budget), generates
summaries (16 at a time, with the KV cache) for the dialogues the config's evaluation.rung_examples
scores at that rung (the whole validation set at the last) and scores them with rouge_score, saves
the adapter with peft's save_pretrained and reports it to Tune as the rung's checkpoint.
OptunaSearch (TPE, the same seed), ASHA; the trials running at once share the GPU evenly (1/N of it
each), as a practitioner who knows a 135M model leaves a GPU idle would set it. Four things are
shared with qlora-sweep on purpose, so that only the machinery differs: the prompt text
(trainables.prompt), the data split (trainables.data.load_dialogues: the same bad rows dropped and
the same data.test_examples held out of train, which no arm trains on), the learning-rate schedule,
and the dialogues each rung scores (EvaluationConfig.dialogues_at: an early rung's a prefix of one
data.seed shuffle, so both arms' ASHA cuts rank trials on the same ones).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from search.config import SweepConfig, load_config
from search.space import resolve_hyperparameters
from search.tuner import tune_search_space


def trainable(config: dict[str, Any], sweep_values: dict[str, Any]) -> None:
    from ray import tune
    from transformers import AutoTokenizer

    sys.path.insert(0, str(ROOT / "benchmarks"))  # in Ray's worker too: trial_speed's plain recipe
    from trial_speed import plain_generate, plain_model, plain_train

    from trainables.data import load_dialogues
    from trainables.evaluation import rouge_scores
    from trainables.prompt import encode_example, encode_prompt

    sweep = SweepConfig.model_validate(sweep_values)
    hp = resolve_hyperparameters(sweep.search, config)
    tokenizer = AutoTokenizer.from_pretrained(sweep.model.name_or_path)
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    dialogues = load_dialogues(sweep.data)
    train, validation = dialogues["train"], dialogues["validation"]
    rows = [e for e in (encode_example(tokenizer, sweep.prompt, r["dialogue"], r["summary"], hp.max_length)
                        for r in train) if e]
    prompts = [encode_prompt(tokenizer, sweep.prompt, d, hp.max_length) for d in validation["dialogue"]]
    references = list(validation["summary"])

    lora = {"lora_r": hp.lora_r, "lora_alpha": hp.lora_alpha, "lora_dropout": hp.lora_dropout,
            "target_modules": hp.target_modules}
    # before the trial's first matmul, which cuBLAS runs by the workspace setting it finds
    use_deterministic_kernels(sweep.training.deterministic, sweep.training.fill_uninitialized_memory)
    model = plain_model(Path(sweep.model.name_or_path), sweep.training.seed, lora)
    optimizer = plain_optimizer(model, hp.learning_rate, hp.loraplus_lr_ratio, sweep.training.weight_decay)
    steps = sweep.training.steps_per_rung
    schedule = lr_schedule(optimizer, sweep.training, steps * sweep.scheduler.max_rungs)
    for rung in range(1, sweep.scheduler.max_rungs + 1):
        speed = plain_train(model, rows, tokenizer, sweep.training.micro_batch_size, steps, 0, hp.learning_rate,
                            sweep.training.seed, optimizer, first_step=(rung - 1) * steps, schedule=schedule)
        # With the KV cache: the recipe turns it off for training and a careful hand turns it back on
        # for generation (the GPU run of 2026-12-01 generated without it: BENCHMARKS.md, "Sweep").
        chosen = sweep.evaluation.dialogues_at(rung, sweep.scheduler.max_rungs, len(prompts), sweep.data.seed)
        predictions = plain_generate(model, tokenizer, [prompts[i] for i in chosen], sweep.evaluation.max_new_tokens,
                                     16, use_cache=True)
        metrics = {**rouge_scores(predictions, [references[i] for i in chosen]), "rouge_examples": len(chosen),
                   "step": rung * steps, "tokens_per_s": speed["tokens_per_s"],
                   "train_loss": speed["train_loss"]}  # the rung's mean, as qlora-sweep's trial reports it
        with tempfile.TemporaryDirectory() as adapter:
            model.save_pretrained(adapter)
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(adapter))


def plain_optimizer(model: Any, learning_rate: float, loraplus_lr_ratio: float, weight_decay: float) -> Any:
    """AdamW on the LoRA weights, as a practitioner builds it; with search.loraplus_lr_ratio other than 1, through
    peft's create_loraplus_optimizer (lora_B at the ratio times the rate), the one call the LoRA+ docs give.
    The weight decay is the config's (torch's default is 0.01, the Trainer's 0)."""
    import torch

    if loraplus_lr_ratio != 1:
        from peft.optimizers import create_loraplus_optimizer

        return create_loraplus_optimizer(model, torch.optim.AdamW, lr=learning_rate,
                                         loraplus_lr_ratio=loraplus_lr_ratio, loraplus_weight_decay=weight_decay)
    return torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=learning_rate,
                             weight_decay=weight_decay)


cublas_workspace_set_here = False  # whether CUBLAS_WORKSPACE_CONFIG is use_deterministic_kernels' own


def use_deterministic_kernels(enabled: bool, fill_uninitialized_memory: bool = False) -> None:
    """training.deterministic as a practitioner sets it by hand, in the trial's process: torch's deterministic
    kernels, cuDNN's, cuBLAS's fixed workspace, so that with it both arms' trials repeat on a rerun. Set either
    way: Tune may run a later trial in the same worker. torch's fill of new memory as the config says
    (training.fill_uninitialized_memory), as qlora-sweep's trials have it: it cost a deterministic step 0.89x
    on an H100, and the arms should differ in their machinery only, not in their kernels. For the same reason
    off takes back the cuBLAS workspace setting on sets (not a user's): it slowed default steps to 0.77x."""
    import torch

    global cublas_workspace_set_here
    if enabled and "CUBLAS_WORKSPACE_CONFIG" not in os.environ:
        os.environ["CUBLAS_WORKSPACE_CONFIG"], cublas_workspace_set_here = ":4096:8", True
    elif not enabled and cublas_workspace_set_here:
        if os.environ.get("CUBLAS_WORKSPACE_CONFIG") == ":4096:8":
            del os.environ["CUBLAS_WORKSPACE_CONFIG"]
        cublas_workspace_set_here = False
    torch.use_deterministic_algorithms(enabled)
    torch.backends.cudnn.deterministic = enabled
    torch.utils.deterministic.fill_uninitialized_memory = fill_uninitialized_memory or not enabled


def lr_schedule(optimizer: Any, training: Any, total_steps: int) -> Any:
    """The config's learning-rate schedule (training.lr_scheduler, training.warmup_steps) over the
    whole budget, as a practitioner takes it from transformers: the one qlora-sweep's Trainer runs,
    so that the two arms train alike and only the machinery differs."""
    from transformers import get_scheduler

    return get_scheduler(training.lr_scheduler, optimizer, num_warmup_steps=training.warmup_steps,
                         num_training_steps=total_steps,
                         scheduler_specific_kwargs=training.lr_scheduler_kwargs(total_steps))


def trials_at_once(sweep: SweepConfig, cluster_cpus: float) -> int:
    """The config's number; for auto, what a practitioner would write: as many as the CPUs hold."""
    wanted = sweep.search.max_concurrent_trials
    if wanted != "auto":
        return wanted
    return max(1, min(sweep.search.num_trials, int(cluster_cpus // sweep.resources.cpus_per_trial)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("--name", required=True)
    parser.add_argument("--storage", required=True, type=Path)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args(argv)
    sweep = load_config(args.config, args.overrides)

    import optuna
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    ray.init(ignore_reinit_error=True)
    at_once = trials_at_once(sweep, ray.cluster_resources().get("CPU", 1))
    gpus = ray.cluster_resources().get("GPU", 0)
    gpu_per_trial = round(gpus / at_once, 3) if gpus else 0
    metric, mode = sweep.scheduler.metric, sweep.scheduler.resolved_mode
    tuner = tune.Tuner(
        tune.with_resources(tune.with_parameters(trainable, sweep_values=sweep.model_dump(mode="json")),
                            {"cpu": sweep.resources.cpus_per_trial, "gpu": gpu_per_trial}),
        param_space=tune_search_space(sweep.search),
        tune_config=tune.TuneConfig(
            metric=metric, mode=mode, num_samples=sweep.search.num_trials,
            search_alg=ConcurrencyLimiter(OptunaSearch(sampler=optuna.samplers.TPESampler(seed=sweep.search.seed)),
                                          max_concurrent=at_once),
            scheduler=ASHAScheduler(time_attr="training_iteration", max_t=sweep.scheduler.max_rungs,
                                    grace_period=sweep.scheduler.grace_period,
                                    reduction_factor=sweep.scheduler.reduction_factor),
        ),
        run_config=tune.RunConfig(name=args.name, storage_path=str(args.storage.resolve()),
                                  checkpoint_config=tune.CheckpointConfig(
                                      num_to_keep=sweep.checkpoints_kept, checkpoint_score_attribute=metric,
                                      checkpoint_score_order=mode)),
    )
    results = tuner.fit()
    # among the trials that reached the last rung, which alone scored the whole validation set
    finished = [r for r in results if (r.metrics or {}).get("training_iteration") == sweep.scheduler.max_rungs]
    if finished:
        best = (max if mode == "max" else min)(finished, key=lambda r: r.metrics[metric])
        print(f"best {metric} at the last rung: {best.metrics[metric]} with {best.config} ({at_once} at a time, "
              f"{gpu_per_trial:g} GPU each)")
    return 0 if results.num_errors < len(results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
