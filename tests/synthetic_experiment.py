"""A synthetic experiment folder, written by real Ray Tune from scripted trials in seconds: no model,
every rung's metrics chosen so that `best` and `report` have one right answer.

    python -m tests.synthetic_experiment STORAGE

Trials (by lora_r), each scoring ROUGE on 2 dialogues at rung 1 and 2, on all 6 at rung 3:
  lora_r=4:  three rungs; its whole-set rougeL 0.50 is the sweep's best (at rung 3)
  lora_r=8:  three rungs; whole-set rougeL 0.40, though it scored 0.55 on a subset at rung 2
  lora_r=16: one rung, then stops, as ASHA stops a trial: only a subset score, 0.60
  lora_r=32: fails at rung 2, after one reported rung
  lora_r=64: diverges in rung 1, as a trial whose loss diverged reports it: ROUGE 0 unmeasured, no checkpoint
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import yaml

NAME = "synthetic"
VALIDATION = 6
ROUGE_L = {4: [0.20, 0.30, 0.50], 8: [0.35, 0.55, 0.40], 16: [0.60], 32: [0.10], 64: [0.0]}
SEARCH = {"lora_r": {"choice": [4, 8, 16, 32, 64]}, "learning_rate": {"low": 1.0e-4, "high": 1.0e-2, "log": True}}
LEARNING_RATE = {4: 1.0e-4, 8: 1.0e-3, 16: 2.0e-3, 32: 3.0e-3, 64: 9.0e-3}  # lora_r=4's sits on its range's edge


def scripted_trial(config: dict) -> None:
    from ray import tune

    rank = config["lora_r"]
    if rank == 64:
        tune.report({"rung": 1, "step": 1, "rougeL": 0.0, "eval_loss": 20.0, "rouge_examples": 0, "diverged": True,
                     "diverged_why": "training loss nan"})
        return
    for rung, rouge_l in enumerate(ROUGE_L[rank], start=1):
        with tempfile.TemporaryDirectory() as folder:
            Path(folder, "adapter_model.safetensors").write_bytes(b"scripted")
            tune.report({"rung": rung, "step": 2 * rung, "rougeL": rouge_l, "eval_loss": 1 / rouge_l,
                         "rouge_examples": VALIDATION if rung == 3 else 2},
                        checkpoint=tune.Checkpoint.from_directory(folder))
    if rank == 32:
        raise RuntimeError("scripted failure at rung 2")


def write(storage: Path) -> Path:
    import ray
    from ray import tune

    experiment = storage / NAME
    experiment.mkdir(parents=True)
    config = {"name": NAME, "storage": str(storage), "model": {"name_or_path": "/models/none"},
              "search": SEARCH, "scheduler": {"metric": "rougeL", "max_rungs": 3}}
    (experiment / "qlora_sweep.yaml").write_text(yaml.safe_dump(config))
    ray.init(num_cpus=len(ROUGE_L), include_dashboard=False)  # every scripted trial at once: they only report
    tuner = tune.Tuner(
        scripted_trial,
        param_space={"lora_r": tune.grid_search(list(ROUGE_L)),
                     "learning_rate": tune.sample_from(lambda spec: LEARNING_RATE[spec.config["lora_r"]])},
        tune_config=tune.TuneConfig(metric="rougeL", mode="max"),
        run_config=tune.RunConfig(name=NAME, storage_path=str(storage), failure_config=tune.FailureConfig(0),
                                  checkpoint_config=tune.CheckpointConfig(num_to_keep=2,
                                                                          checkpoint_score_attribute="rougeL")),
    )
    tuner.fit()
    ray.shutdown()
    return experiment


if __name__ == "__main__":
    os.environ.setdefault("RAY_ADDRESS", "local")
    print(json.dumps(str(write(Path(sys.argv[1])))))
