import pytest

from trainables.config import PromptConfig
from trainables.prompt import (
    IGNORE_INDEX,
    encode_example,
    encode_prompt,
    format_example,
    format_prompt,
    scaffolding_length,
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
