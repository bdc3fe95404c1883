"""A tiny Llama with random weights and a byte-level BPE tokenizer trained on the shipped
sample, both built offline: the real stack (bitsandbytes 4-bit, peft, TRL, Ray Tune) in seconds."""

from __future__ import annotations

import json
from pathlib import Path

SAMPLE = Path(__file__).resolve().parent.parent / "trainables" / "samples" / "train.jsonl"


def build_tiny_llama(folder: Path, seed: int = 0) -> Path:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    rows = [json.loads(line) for line in SAMPLE.read_text(encoding="utf-8").splitlines()]
    texts = [r["dialogue"] + "\n\n" + r["summary"] for r in rows]
    texts += ["Below is an instruction that describes a task. ### Instruct: Summarize the below conversation. "
              "### Output:\n ### End"]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=600, special_tokens=["<|endoftext|>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    ))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>", pad_token="<pad>")

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, bos_token_id=None,
        tie_word_embeddings=False,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def build_trained_tiny_llama(folder: Path, steps: int = 80) -> Path:
    """The tiny Llama trained `steps` steps on the sample's examples as a trial's prompts write them (full weights,
    4 s on 2 cores), so it predicts them far better than chance (a trial's first step 1.8-2.4, against ln 600 =
    6.4): a model that a learning rate far too high makes worse than it began, as it makes SmolLM2 worse
    (training.divergence_loss_ratio; at lr 0.1-0.3 its loss went to 5.5-9.7 within 3 steps, at 1e-3 it stayed
    within 1.3x of the first step's). The random tiny model cannot be made much worse: its loss stays near ln 600."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trainables.config import PromptConfig
    from trainables.prompt import format_example

    build_tiny_llama(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    rows = [json.loads(line) for line in SAMPLE.read_text(encoding="utf-8").splitlines()]
    texts = [format_example(PromptConfig(), r["dialogue"], r["summary"]) for r in rows]  # as a trial's prompts read
    torch.manual_seed(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for step in range(steps):
        batch = tokenizer([texts[(step * 8 + i) % len(texts)] for i in range(8)], return_tensors="pt", padding=True,
                          truncation=True, max_length=256)
        model(**batch, labels=batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.save_pretrained(folder)
    return folder


if __name__ == "__main__":
    import sys

    print(build_tiny_llama(Path(sys.argv[1])))
