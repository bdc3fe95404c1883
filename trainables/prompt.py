"""The recipe's prompt, and its tokenization for causal-LM training.

Text: intro, instruction, dialogue, response_marker + summary, end_marker, joined by a blank line;
an empty dialogue part is dropped. The loss covers only the response (summary, end marker, EOS).
Truncation shortens the dialogue, never the summary or the response marker.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # trainables.config takes the recipe's text below as PromptConfig's defaults
    from trainables.config import ModelConfig, PromptConfig

# The recipe's prompt (the defaults of trainables.config.PromptConfig).
RECIPE_INTRO = (
    "\nBelow is an instruction that describes a task. "
    "Write a response that appropriately completes the request."
)
RECIPE_INSTRUCTION = "### Instruct: Summarize the below conversation."
RECIPE_RESPONSE_MARKER = "### Output:\n"
RECIPE_END_MARKER = "### End"

SEPARATOR = "\n\n"
IGNORE_INDEX = -100  # label value the cross-entropy loss skips


def load_tokenizer(model: ModelConfig) -> Any:
    """The model's tokenizer, with a pad token (the EOS token when the model has none)."""
    from transformers import AutoTokenizer  # heavy: the driver loads it only to check a sweep

    tokenizer = AutoTokenizer.from_pretrained(model.name_or_path, trust_remote_code=model.trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def format_prompt(prompt: PromptConfig, dialogue: str) -> str:
    """Everything the model sees before it writes the summary (ends with the response marker)."""
    parts = [prompt.intro, prompt.instruction, dialogue, prompt.response_marker]
    return SEPARATOR.join(part for part in parts if part)


def format_response(prompt: PromptConfig, summary: str) -> str:
    return summary + SEPARATOR + prompt.end_marker


def format_example(prompt: PromptConfig, dialogue: str, summary: str) -> str:
    """The recipe's full training text."""
    return format_prompt(prompt, dialogue) + format_response(prompt, summary)


def scaffolding_length(tokenizer: Any, prompt: PromptConfig) -> int:
    """Tokens of a training example with an empty dialogue and summary: max_length must exceed it."""
    return len(_encode(tokenizer, format_example(prompt, "", ""))[0]) + _eos_count(tokenizer)


def encode_example(
    tokenizer: Any, prompt: PromptConfig, dialogue: str, summary: str, max_length: int
) -> dict[str, list[int]] | None:
    """input_ids and labels (prompt tokens masked), at most max_length tokens.

    Returns None when even an empty dialogue leaves no room for the summary: such an example
    cannot be trained on without cutting the summary, so the caller drops it.
    """
    eos = _eos_count(tokenizer)
    dialogue_offsets: list[tuple[int, int]] | None = None
    keep = None
    while True:
        text_dialogue = dialogue if keep is None else dialogue[: _char_cut(dialogue_offsets, keep)]
        prompt_text = format_prompt(prompt, text_dialogue)
        ids, offsets = _encode(tokenizer, prompt_text + format_response(prompt, summary))
        excess = len(ids) + eos - max_length
        if excess <= 0:
            break
        if dialogue_offsets is None:
            dialogue_offsets = _encode(tokenizer, dialogue, special=False)[1]
            keep = len(dialogue_offsets)
        if keep == 0:
            return None
        keep = max(0, keep - excess)
    boundary = len(prompt_text)
    labels = [
        token if end > boundary else IGNORE_INDEX  # a token ending inside the prompt is context
        for token, (_, end) in zip(ids, offsets)
    ]
    if eos:
        ids = ids + [tokenizer.eos_token_id]
        labels = labels + [tokenizer.eos_token_id]
    return {"input_ids": ids, "labels": labels}


def encode_prompt(tokenizer: Any, prompt: PromptConfig, dialogue: str, max_length: int) -> str:
    """The generation prompt as text, its dialogue shortened so the prompt fits max_length tokens."""
    text = format_prompt(prompt, dialogue)
    ids, _ = _encode(tokenizer, text)
    if len(ids) <= max_length:
        return text
    dialogue_offsets = _encode(tokenizer, dialogue, special=False)[1]
    keep = max(0, len(dialogue_offsets) - (len(ids) - max_length))
    while True:
        text = format_prompt(prompt, dialogue[: _char_cut(dialogue_offsets, keep)])
        excess = len(_encode(tokenizer, text)[0]) - max_length
        if excess <= 0 or keep == 0:
            return text
        keep = max(0, keep - excess)


def _encode(tokenizer: Any, text: str, special: bool = True) -> tuple[list[int], list[tuple[int, int]]]:
    encoded = tokenizer(text, add_special_tokens=special, return_offsets_mapping=True)
    return list(encoded["input_ids"]), [tuple(o) for o in encoded["offset_mapping"]]


def _char_cut(offsets: list[tuple[int, int]] | None, keep: int) -> int:
    return offsets[keep - 1][1] if keep > 0 and offsets else 0


def _eos_count(tokenizer: Any) -> int:
    return 1 if tokenizer.eos_token_id is not None else 0
