import threading

import pytest

from trainables.config import PromptConfig
from trainables.prompt import (
    IGNORE_INDEX,
    MIN_TEXTS_PER_THREAD,
    encode_example,
    encode_examples,
    encode_prompt,
    format_example,
    format_prompt,
    scaffolding_length,
    tokenizing_threads,
)

pytestmark = pytest.mark.unit

INTRO = ("Below is an instruction that describes a task. "
         "Write a response that appropriately completes the request.")


def test_format_equals_the_recipe_text_exactly():
    text = format_example(PromptConfig(), "#Person1#: Hi.\n#Person2#: Hello.", "They greet.")
    assert text == (
        "\n" + INTRO + "\n\n"
        "### Instruct: Summarize the below conversation.\n\n"
        "#Person1#: Hi.\n#Person2#: Hello.\n\n"
        "### Output:\nThey greet.\n\n"
        "### End"
    )


def test_empty_dialogue_part_is_dropped():
    assert format_example(PromptConfig(), "", "S.") == (
        "\n" + INTRO + "\n\n### Instruct: Summarize the below conversation.\n\n### Output:\nS.\n\n### End"
    )


def test_generation_prompt_ends_at_the_response_marker():
    assert format_prompt(PromptConfig(), "D").endswith("D\n\n### Output:\n")


def test_labels_cover_only_the_response(tiny_tokenizer):
    prompt = PromptConfig()
    encoded = encode_example(tiny_tokenizer, prompt, "#Person1#: Hi there.", "They greet.", 512)
    ids, labels = encoded["input_ids"], encoded["labels"]
    assert len(ids) == len(labels)
    assert ids[-1] == labels[-1] == tiny_tokenizer.eos_token_id
    response = tiny_tokenizer.decode([t for t in labels if t != IGNORE_INDEX], skip_special_tokens=True)
    assert response.strip() == "They greet.\n\n### End"
    masked = tiny_tokenizer.decode([t for t, l in zip(ids, labels) if l == IGNORE_INDEX])
    assert masked.endswith("### Output:\n") and "They greet" not in masked


def test_truncation_shortens_the_dialogue_and_keeps_summary_and_marker(tiny_tokenizer):
    prompt = PromptConfig()
    dialogue = "\n".join(f"#Person{1 + i % 2}#: sentence number {i} about the weather." for i in range(60))
    summary = "#Person1# and #Person2# talk about the weather for a long time."
    max_length = 200
    encoded = encode_example(tiny_tokenizer, prompt, dialogue, summary, max_length)
    assert len(encoded["input_ids"]) <= max_length
    text = tiny_tokenizer.decode(encoded["input_ids"], skip_special_tokens=True)
    assert "### Output:\n" + summary + "\n\n### End" in text
    assert "sentence number 0 " in text and "sentence number 59" not in text  # the dialogue's tail went
    untruncated = encode_example(tiny_tokenizer, prompt, dialogue, summary, 100_000)
    assert len(untruncated["input_ids"]) > max_length


def test_an_example_whose_summary_cannot_fit_is_dropped(tiny_tokenizer):
    prompt = PromptConfig()
    budget = scaffolding_length(tiny_tokenizer, prompt) + 3
    assert encode_example(tiny_tokenizer, prompt, "short", "a summary far too long to fit " * 5, budget) is None


def test_generation_prompt_is_truncated_in_the_dialogue(tiny_tokenizer):
    prompt = PromptConfig()
    dialogue = " ".join(f"word{i}" for i in range(400))
    text = encode_prompt(tiny_tokenizer, prompt, dialogue, 150)
    assert len(tiny_tokenizer(text)["input_ids"]) <= 150
    assert text.endswith("\n\n### Output:\n") and text.startswith("\n" + INTRO)


def _one_at_a_time(tokenizer, prompt, dialogue, summary, max_length):
    """The cutting loop, one example and one tokenizer call at a time, as trainables.prompt ran it
    before it batched: the oracle the batched encoding must equal to the token."""
    eos = 1 if tokenizer.eos_token_id is not None else 0
    offsets_of_dialogue, keep = None, None
    while True:
        cut = dialogue if keep is None else dialogue[: offsets_of_dialogue[keep - 1][1] if keep else 0]
        prompt_text = format_prompt(prompt, cut)
        encoded = tokenizer(prompt_text + summary + "\n\n" + prompt.end_marker, return_offsets_mapping=True)
        ids, offsets = list(encoded["input_ids"]), encoded["offset_mapping"]
        excess = len(ids) + eos - max_length
        if excess <= 0:
            break
        if offsets_of_dialogue is None:
            offsets_of_dialogue = tokenizer(dialogue, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
            keep = len(offsets_of_dialogue)
        if keep == 0:
            return None
        keep = max(0, keep - excess)
    labels = [t if end > len(prompt_text) else IGNORE_INDEX for t, (_, end) in zip(ids, offsets)]
    return {"input_ids": ids + [tokenizer.eos_token_id], "labels": labels + [tokenizer.eos_token_id]}


def test_batched_encoding_equals_each_example_encoded_alone(tiny_tokenizer):
    """One batch holding examples that fit, that must be cut once or again, whose summary cannot fit,
    and an empty dialogue: each comes out as the one-at-a-time loop makes it."""
    prompt = PromptConfig()
    max_length = scaffolding_length(tiny_tokenizer, prompt) + 40
    dialogues = ["#Person1#: Hi.", " ".join(f"word{i}" for i in range(300)), "short",
                 "\n".join(f"#Person{1 + i % 2}#: sentence {i} here." for i in range(50)), "", "#Person2#: Bye."]
    summaries = ["They greet.", "A long talk.", "a summary far too long to fit " * 8, "They talk.", "Nothing.", "Bye."]
    expected = [_one_at_a_time(tiny_tokenizer, prompt, d, s, max_length) for d, s in zip(dialogues, summaries)]
    assert expected[2] is None and expected[0] is not None
    assert len(expected[1]["input_ids"]) <= max_length and len(expected[3]["input_ids"]) <= max_length
    assert encode_examples(tiny_tokenizer, prompt, dialogues, summaries, max_length) == expected
    assert [encode_example(tiny_tokenizer, prompt, d, s, max_length) for d, s in zip(dialogues, summaries)] == expected
    assert encode_examples(tiny_tokenizer, prompt, [], [], max_length) == []


class ThreadRecordingTokenizer:
    """The tiny tokenizer, called as encode_examples calls it, noting which thread made each call."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer, self.threads = tokenizer, set()
        self.eos_token_id = tokenizer.eos_token_id

    def __call__(self, texts, **kwargs):
        self.threads.add(threading.current_thread().name)
        return self.tokenizer(texts, **kwargs)


def test_examples_encoded_over_threads_equal_those_encoded_in_one_call(tiny_tokenizer):
    prompt = PromptConfig()
    max_length = scaffolding_length(tiny_tokenizer, prompt) + 40
    count = 3 * MIN_TEXTS_PER_THREAD + 5  # enough for 3 threads; some cut once or again, some too long to fit
    dialogues = [" ".join(f"word{i}" for i in range(5 + 7 * (n % 50))) + f" #{n}" for n in range(count)]
    summaries = [("a summary far too long to fit " * 8) if n % 17 == 0 else f"Summary {n}." for n in range(count)]
    expected = encode_examples(tiny_tokenizer, prompt, dialogues, summaries, max_length)
    assert any(e is None for e in expected) and sum(e is not None for e in expected) > count / 2

    recording = ThreadRecordingTokenizer(tiny_tokenizer)
    with tokenizing_threads(3):
        assert encode_examples(recording, prompt, dialogues, summaries, max_length) == expected
    assert len({name for name in recording.threads if name.startswith("tokenize")}) == 3

    alone = ThreadRecordingTokenizer(tiny_tokenizer)  # outside the block: one call, in this thread
    assert encode_examples(alone, prompt, dialogues, summaries, max_length) == expected
    assert alone.threads == {threading.current_thread().name}
