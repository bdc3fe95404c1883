import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent

# Keep every cache a test touches inside pytest's temp area, and the hub unreachable on purpose.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Tests run two at a time (pytest-xdist): every sweep starts its own local Ray, and never joins
# the two-node cluster that tests/test_cluster.py runs meanwhile (ray.init() would, unasked).
os.environ.setdefault("RAY_ADDRESS", "local")
# Two tests at a time on 2 cores, each with processes of its own: torch's OpenMP threads, left to wait
# for work by spinning (OpenMP's default), spend the core another test needs. Waiting asleep changes no
# result; the unit layer took 56.5 s against 62.3 s (105 s of CPU against 116 s). Read by the OpenMP
# runtime as torch loads, which no test module has done yet here; every process a test starts inherits it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

LAYERS = ("unit", "sweep", "cluster", "gpu")  # pyproject.toml says what each is
CPU_LAYERS = ("unit", "sweep", "cluster")


def selected_layers(markexpr: str) -> set[str]:
    """The layers a `-m` expression selects, each test carrying one layer's marker alone."""
    if not markexpr:
        return set(LAYERS)
    # pytest's own parser of -m; not public API, and tests/test_conftest.py fails if it changes
    from _pytest.mark.expression import Expression

    expression = Expression.compile(markexpr)
    return {layer for layer in LAYERS if expression.evaluate(lambda name, **_: name == layer)}


def hides_gpus(config) -> bool:
    """Whether this run selects a CPU layer, and so hides the machine's GPUs (pytest_configure)."""
    return bool(selected_layers(config.option.markexpr) & set(CPU_LAYERS))


def pytest_configure(config):
    """The unit, sweep and cluster layers test the CPU path, as CI's machines run it. A run that selects any
    of them hides the machine's GPUs from itself and every process it starts (Ray's workers too), before
    anything imports torch: with a GPU in sight their trials take the GPU's defaults (bf16 compute, Liger's
    kernels, the fused LM head) and their models land on it beside the tests' CPU tensors. 27 of them failed
    so on an H100 (2026-12-06). The gpu layer runs in a pytest of its own (`pytest -n 0 -m gpu`,
    scripts/test.sh)."""
    if hides_gpus(config):
        os.environ["CUDA_VISIBLE_DEVICES"] = ""


def pytest_collection_modifyitems(config, items):
    """Every test is in exactly one layer; GPU tests skip, saying why, where they see no GPU."""
    unlayered = [item.nodeid for item in items
                 if sum(item.get_closest_marker(layer) is not None for layer in LAYERS) != 1]
    if unlayered:
        raise pytest.UsageError(f"tests need exactly one layer marker ({', '.join(LAYERS)}): {', '.join(unlayered[:5])}")
    gpu_tests = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu_tests:
        return
    if hides_gpus(config):
        reason = ("needs a CUDA GPU, which a run of the CPU layers hides from itself: "
                  "the gpu layer runs alone, `pytest -n 0 -m gpu`")
    else:
        import torch

        if torch.cuda.is_available():
            return
        reason = "needs a CUDA GPU, and torch sees none on this machine"
    for item in gpu_tests:
        item.add_marker(pytest.mark.skip(reason=reason))


def built_once(tmp_path_factory, name: str, build) -> Path:
    """A folder `build` fills once per test run: with pytest-xdist, the first worker to get here
    builds it and the other waits for it and reuses it, rather than building its own beside it."""
    import fcntl

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # shared by the workers of this run
    folder = root / name
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (folder / ".built").exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            build(folder)
            (folder / ".built").touch()
    return folder


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory) -> Path:
    from tests.tiny_model import build_tiny_llama

    return built_once(tmp_path_factory, "tiny-llama", build_tiny_llama)


@pytest.fixture(scope="session")
def trained_tiny_model_path(tmp_path_factory) -> Path:
    from tests.tiny_model import build_trained_tiny_llama

    return built_once(tmp_path_factory, "trained-tiny-llama", build_trained_tiny_llama)


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
        # No dashboard: 3 s less a sweep; the default (on) runs in the quickstart, benchmark and cluster tests
        "resources": {"cpus_per_trial": 1, "ray_dashboard": False},
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


E2E_NUM_TRIALS = 6
E2E_MAX_RUNGS = 3


@pytest.fixture(scope="session")
def sweep(tiny_model_path, tmp_path_factory):
    """A finished six-trial sweep on the tiny model, shared by the tests that read its folder."""
    from tests.helpers import run_cli

    def run_the_sweep(folder: Path) -> None:
        # eval_loss separates trials on a random tiny model (its ROUGE is ~0 for all), so ASHA has
        # something to decide on; the default metric, rougeL, is exercised by the quickstart.
        config = tiny_sweep_dict(
            tiny_model_path, folder / "results", name="e2e",
            search={"num_trials": E2E_NUM_TRIALS, "seed": 3},
            scheduler={"metric": "eval_loss", "max_rungs": E2E_MAX_RUNGS, "grace_period": 1, "reduction_factor": 2},
            # The other sweeps in the suite generate through the 4-bit model itself, the default.
            evaluation={"merged_copy": True},
            resources={"ray_dashboard": True},  # the default, which the tiny sweeps turn off
        )
        done = run_cli("run", write_config(folder / "sweep.yaml", config))
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        (folder / "run.stdout").write_text(done.stdout)
        (folder / "run.stderr").write_text(done.stderr)

    folder = built_once(tmp_path_factory, "sweep", run_the_sweep)
    done = subprocess.CompletedProcess(["qlora-sweep", "run"], 0, stdout=(folder / "run.stdout").read_text(),
                                       stderr=(folder / "run.stderr").read_text())
    return folder / "results" / "e2e", done
