import os
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent

# Keep every cache a test touches inside pytest's temp area, and the hub unreachable on purpose.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory) -> Path:
    from tests.tiny_model import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_path)


def tiny_sweep_dict(model_path: Path, storage: Path, **sections) -> dict:
    """A sweep on the tiny model and the shipped sample that finishes in well under a minute."""
    config = {
        "name": "tiny",
        "storage": str(storage),
        "model": {"name_or_path": str(model_path)},
        "data": {"max_train_examples": 64, "max_validation_examples": 6},
        "training": {"steps_per_rung": 2, "micro_batch_size": 2, "gradient_checkpointing": False},
        "evaluation": {"max_new_tokens": 12, "batch_size": 8, "rung_examples": [2, 4]},
        "search": {
            "lora_r": {"choice": [2, 4]},
            "lora_alpha": {"choice": [4, 8]},
            "learning_rate": {"low": 1.0e-4, "high": 3.0e-2, "log": True},
            "max_length": {"choice": [160, 192]},
            "num_trials": 4,
            "max_concurrent_trials": 2,
        },
        "scheduler": {"max_rungs": 3, "grace_period": 1},
        "resources": {"cpus_per_trial": 1},
    }
    for section, values in sections.items():
        if isinstance(values, dict) and isinstance(config.get(section), dict):
            config[section] = {**config[section], **values}
        else:
            config[section] = values
    return config


def write_config(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path
