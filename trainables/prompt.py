"""The recipe's prompt, and its tokenization for causal-LM training.

Text: intro, instruction, dialogue, response_marker + summary, end_marker, joined by a blank line;
an empty dialogue part is dropped. The loss covers only the response (summary, end marker, EOS).
Truncation shortens the dialogue, never the summary or the response marker.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
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

# Threads encode_examples splits each tokenizer call over (tokenizing_threads). A fast tokenizer encodes
# with Python's lock released, so threads overlap its Rust part (about 80 % of a call): 2 threads tokenized
# DialogSum's train split for training in 4.79 s against 6.85 s on 2 cores (benchmarks/tokenize_time.py,
# benchmarks/results/2026-12-05-tokenize-threads). A context, not an argument, because datasets
# keys its cache on what the mapped function holds: the driver and a trial must key the same files
# whatever thread counts they tokenize with. (TOKENIZERS_PARALLELISM stays off: its fork warning.)
_TOKENIZE_THREADS: ContextVar[int] = ContextVar("tokenize_threads", default=1)
MIN_TEXTS_PER_THREAD = 64  # below it a thread's start costs more than its share saves


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
    return encode_examples(tokenizer, prompt, [dialogue], [summary], max_length)[0]


@contextlib.contextmanager
def tokenizing_threads(threads: int) -> Iterator[None]:
    """encode_examples' tokenizer calls, in this thread and within the block, split over `threads` threads."""
    token = _TOKENIZE_THREADS.set(max(1, int(threads)))
    try:
        yield
    finally:
        _TOKENIZE_THREADS.reset(token)


def _tokenized(tokenizer: Any, texts: list[str], special: bool) -> dict[str, list]:
    """input_ids and offset_mapping of each text, in one tokenizer call or in tokenizing_threads' chunks."""
    threads = min(_TOKENIZE_THREADS.get(), len(texts) // MIN_TEXTS_PER_THREAD)

    def call(chunk: list[str]) -> Any:
        return tokenizer(chunk, add_special_tokens=special, return_offsets_mapping=True)

    if threads <= 1:
        encoded = call(texts)
        return {"input_ids": encoded["input_ids"], "offset_mapping": encoded["offset_mapping"]}
    # A call sets the Rust tokenizer's truncation and padding only where they differ from what it asks:
    # after this one the threads' calls find them set and only read (two setting them at once would fail)
    call(texts[:1])
    size = -(-len(texts) // threads)
    with ThreadPoolExecutor(threads, thread_name_prefix="tokenize") as pool:
        parts = list(pool.map(call, [texts[start:start + size] for start in range(0, len(texts), size)]))
    return {key: [row for part in parts for row in part[key]] for key in ("input_ids", "offset_mapping")}


def encode_examples(
    tokenizer: Any, prompt: PromptConfig, dialogues: Sequence[str], summaries: Sequence[str], max_length: int
) -> list[dict[str, list[int]] | None]:
    """encode_example of each pair, in a few batched calls of the tokenizer.

    A fast tokenizer encodes a batch in Rust, without a Python round trip per text: one call per
    example cost a fresh trial worker most of its 8 s of tokenizing DialogSum's train split before
    its first step. An example over max_length loses as many dialogue tokens as it is over, and is
    encoded again, until it fits (the text re-tokenizes differently at the cut); every round is
    one batch of the examples still over."""
    eos = _eos_count(tokenizer)
    examples: list[dict[str, list[int]] | None] = [None] * len(dialogues)
    dialogue_offsets: dict[int, list[tuple[int, int]]] = {}  # of the examples that had to be cut
    keep: dict[int, int] = {}  # dialogue tokens each cut example keeps this round
    pending = list(range(len(dialogues)))
    while pending:
        prompt_texts = [format_prompt(prompt, dialogues[i] if i not in keep
                                      else dialogues[i][: _char_cut(dialogue_offsets[i], keep[i])]) for i in pending]
        encoded = _tokenized(tokenizer, [text + format_response(prompt, summaries[i])
                                         for text, i in zip(prompt_texts, pending)], special=True)
        over: dict[int, int] = {}  # example: tokens over max_length
        for row, (i, prompt_text) in enumerate(zip(pending, prompt_texts)):
            ids = encoded["input_ids"][row]
            excess = len(ids) + eos - max_length
            if excess <= 0:
                examples[i] = _labelled(tokenizer, list(ids), encoded["offset_mapping"][row], len(prompt_text))
            else:
                over[i] = excess
        first_cut = [i for i in over if i not in dialogue_offsets]
        if first_cut:
            spans = _tokenized(tokenizer, [dialogues[i] for i in first_cut], special=False)["offset_mapping"]
            for i, offsets in zip(first_cut, spans):
                dialogue_offsets[i], keep[i] = offsets, len(offsets)
        pending = []
        for i, excess in over.items():
            if keep[i] > 0:  # with no dialogue left, the summary cannot fit: the example stays None
                keep[i] = max(0, keep[i] - excess)
                pending.append(i)
    return examples


def _labelled(tokenizer: Any, ids: list[int], offsets: Sequence[Sequence[int]], boundary: int) -> dict[str, list[int]]:
    """input_ids and labels: a token ending inside the prompt's `boundary` characters is context
    (IGNORE_INDEX); the EOS token, where the tokenizer has one, ends both."""
    labels = [token if span[1] > boundary else IGNORE_INDEX for token, span in zip(ids, offsets)]
    if tokenizer.eos_token_id is not None:
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
