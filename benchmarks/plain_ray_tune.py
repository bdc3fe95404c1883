"""The QLoRA sweep as a practitioner glues it by hand with Ray Tune: issue 6's check that the
levers-off arm of benchmarks/sweep_benchmark.py is not a strawman.

    python benchmarks/plain_ray_tune.py CONFIG --name NAME --storage DIR [--set KEY=VALUE ...]

It reads the same sweep YAML (model, data, search space, number of trials, ASHA settings,
seeds) and uses none of qlora-sweep's trial code: a function trainable loads the model in 4-bit
NF4 and attaches LoRA with peft, trains each rung with padded micro-batches and AdamW, generates
summaries for the whole validation set and scores them with rouge_score, and reports to Tune;
OptunaSearch (TPE, the same seed), ASHA, one GPU per trial when there are GPUs. The prompt text
is the recipe's (trainables.prompt) so that only the machinery differs. No checkpoints.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from search.config import SweepConfig, load_config  # noqa: E402
from search.space import resolve_hyperparameters  # noqa: E402
from search.tuner import tune_search_space  # noqa: E402


def trainable(config: dict[str, Any], sweep_values: dict[str, Any]) -> None:
    import datasets
    from ray import tune
    from transformers import AutoTokenizer

    sys.path.insert(0, str(ROOT / "benchmarks"))  # in Ray's worker too: trial_speed's plain recipe
    from trainables.evaluation import rouge_scores
    from trainables.prompt import encode_example, encode_prompt
    from trial_speed import plain_generate, plain_model, plain_train

    sweep = SweepConfig.model_validate(sweep_values)
    hp = resolve_hyperparameters(sweep.search, config)
    tokenizer = AutoTokenizer.from_pretrained(sweep.model.name_or_path)
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    folder = Path(sweep.data.path)
    train = datasets.load_dataset("json", data_files=str(folder / "train.jsonl"), split="train")
    validation = datasets.load_dataset("json", data_files=str(folder / "validation.jsonl"), split="train")
    if sweep.data.max_train_examples:
        train = train.select(range(min(len(train), sweep.data.max_train_examples)))
    validation = validation.select(range(min(len(validation), sweep.data.max_validation_examples)))
    rows = [e for e in (encode_example(tokenizer, sweep.prompt, r["dialogue"], r["summary"], hp.max_length)
                        for r in train) if e]
    prompts = [encode_prompt(tokenizer, sweep.prompt, d, hp.max_length) for d in validation["dialogue"]]

    lora = {"lora_r": hp.lora_r, "lora_alpha": hp.lora_alpha, "lora_dropout": hp.lora_dropout,
            "target_modules": hp.target_modules}
    model = plain_model(Path(sweep.model.name_or_path), sweep.training.seed, lora)
    import torch

    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=hp.learning_rate)
    steps = sweep.training.steps_per_rung
    for rung in range(1, sweep.scheduler.max_rungs + 1):
        speed = plain_train(model, rows, tokenizer, sweep.training.micro_batch_size, steps, 0, hp.learning_rate,
                            sweep.training.seed, optimizer, first_step=(rung - 1) * steps)
        predictions = plain_generate(model, tokenizer, prompts, sweep.evaluation.max_new_tokens, 16)
        tune.report({**rouge_scores(predictions, list(validation["summary"])), "rouge_examples": len(prompts),
                     "step": rung * steps, "tokens_per_s": speed["tokens_per_s"]})


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
    gpus = 1 if ray.cluster_resources().get("GPU", 0) else 0
    metric, mode = sweep.scheduler.metric, sweep.scheduler.resolved_mode
    tuner = tune.Tuner(
        tune.with_resources(tune.with_parameters(trainable, sweep_values=sweep.model_dump(mode="json")),
                            {"cpu": sweep.resources.cpus_per_trial, "gpu": gpus}),
        param_space=tune_search_space(sweep.search),
        tune_config=tune.TuneConfig(
            metric=metric, mode=mode, num_samples=sweep.search.num_trials,
            search_alg=ConcurrencyLimiter(OptunaSearch(sampler=optuna.samplers.TPESampler(seed=sweep.search.seed)),
                                          max_concurrent=sweep.search.max_concurrent_trials),
            scheduler=ASHAScheduler(time_attr="training_iteration", max_t=sweep.scheduler.max_rungs,
                                    grace_period=sweep.scheduler.grace_period,
                                    reduction_factor=sweep.scheduler.reduction_factor),
        ),
        run_config=tune.RunConfig(name=args.name, storage_path=str(args.storage.resolve())),
    )
    results = tuner.fit()
    best = results.get_best_result()
    print(f"best {metric}: {best.metrics.get(metric)} with {best.config}")
    return 0 if results.num_errors < len(results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
