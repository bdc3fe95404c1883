import pytest
from rouge_score import rouge_scorer

from trainables.evaluation import (
    BEST_REFERENCE,
    MEAN_OVER_REFERENCES,
    cut_at_end_marker,
    rouge_scores,
    rouge_scores_multi,
)

pytestmark = pytest.mark.unit

PAIRS = [
    ("#Person1# books a table for four on Friday.", "#Person2# books a table for 4 people on Friday at 7 pm."),
    ("The cat sat on the mat. It was happy.", "A cat was sitting on a mat. The cat seemed happy."),
    ("Totally unrelated words here.", "Nothing in common at all?"),
]


def test_rouge_equals_rouge_score_mean_f1_on_known_pairs():
    predictions, references = zip(*PAIRS)
    ours = rouge_scores(list(predictions), list(references))
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    for name in ("rouge1", "rouge2", "rougeL"):
        expected = sum(scorer.score(r, p)[name].fmeasure for p, r in PAIRS) / len(PAIRS)
        assert ours[name] == pytest.approx(expected, abs=1e-12)
    # rougeLsum splits sentences onto lines first, as rouge_score expects for summary-level LCS.
    lsum = rouge_scorer.RougeScorer(["rougeLsum"], use_stemmer=True)
    expected = sum(
        lsum.score(r.replace(". ", ".\n"), p.replace(". ", ".\n"))["rougeLsum"].fmeasure for p, r in PAIRS
    ) / len(PAIRS)
    assert ours["rougeLsum"] == pytest.approx(expected, abs=1e-12)


def test_identical_texts_score_one_and_stemming_matches_word_forms():
    assert rouge_scores(["the dogs are running"], ["the dogs are running"])["rougeL"] == 1.0
    assert rouge_scores(["he runs"], ["he running"])["rouge1"] == 1.0


def test_generation_is_cut_at_the_end_marker():
    assert cut_at_end_marker(" A summary.\n\n### End\n### Instruct: more", "### End") == "A summary."
    assert cut_at_end_marker("no marker", "### End") == "no marker"


def test_mismatched_lengths_are_rejected():
    with pytest.raises(ValueError, match="2 predictions for 1 references"):
        rouge_scores(["a", "b"], ["a"])


def test_several_references_score_by_the_best_match_and_by_the_mean():
    prediction = "#Person1# books a table for four on Friday."
    references = [prediction, "Nothing in common at all?"]
    scores = rouge_scores_multi([prediction], [references])
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    unrelated = scorer.score(references[1], prediction)["rougeL"].fmeasure
    assert scores[BEST_REFERENCE]["rougeL"] == 1.0
    assert scores[MEAN_OVER_REFERENCES]["rougeL"] == pytest.approx((1.0 + unrelated) / 2)
    # One reference: both rules agree with the single-reference score.
    single = rouge_scores([prediction], [references[1]])
    assert rouge_scores_multi([prediction], [[references[1]]])[MEAN_OVER_REFERENCES] == pytest.approx(single)


def test_reference_fields_are_the_named_ones_else_summary_else_its_numbered_copies():
    from trainables.errors import ConfigError
    from trainables.score_file import reference_fields

    assert reference_fields(["dialogue", "summary"], "summary", None) == ["summary"]
    assert reference_fields(["dialogue", "summary10", "summary2", "summary1"], "summary", None) == [
        "summary1", "summary2", "summary10"]
    assert reference_fields(["dialogue", "a", "b"], "summary", ["b"]) == ["b"]
    with pytest.raises(ConfigError, match=r"reference field\(s\) gold not in the file \(it has: dialogue, summary\)"):
        reference_fields(["dialogue", "summary"], "summary", ["gold"])
    with pytest.raises(ConfigError, match="no 'summary' or 'summary1'"):
        reference_fields(["dialogue", "abstract"], "summary", None)


def _adapted_tiny_model(tiny_model_path):
    """The tiny model in 4-bit with a LoRA that changes what it says, and its tokenizer."""
    import torch

    from trainables.config import ModelConfig, TrialHyperparameters
    from trainables.model import attach_lora, load_quantized_model, prepare_for_training
    from trainables.prompt import load_tokenizer

    config = ModelConfig(name_or_path=str(tiny_model_path))
    hp = TrialHyperparameters(lora_r=8, lora_alpha=8, learning_rate=1e-3, max_length=256, lora_dropout=0.0,
                              target_modules="all-linear")
    # LoRA's A matrices are drawn here, B below: a fixed draw under which the summaries differ from
    # one dialogue to the next (under some draws this random model says the same to every dialogue)
    torch.manual_seed(3)
    model = attach_lora(prepare_for_training(load_quantized_model(config), False), hp)
    for name, parameter in model.named_parameters():
        if "lora_B" in name:
            parameter.data.normal_(0, 0.05)
    return model, load_tokenizer(config)


def test_continuous_batching_generates_the_summaries_of_fixed_batches(tiny_model_path):
    """Twelve dialogues, four at a time: as each finishes a waiting one takes its place, and every
    summary is the one fixed batches of four generate (through the 4-bit model and a merged copy)."""
    import json

    from tests.tiny_model import SAMPLE
    from trainables.config import PromptConfig
    from trainables.evaluation import generate_continuously, generate_summaries
    from trainables.model import model_for_generation
    from trainables.prompt import encode_prompt

    model, tokenizer = _adapted_tiny_model(tiny_model_path)
    dialogues = [json.loads(line)["dialogue"] for line in SAMPLE.read_text().splitlines()[:12]]
    prompts = [encode_prompt(tokenizer, PromptConfig(), d, 256) for d in dialogues]
    marker = PromptConfig().end_marker
    for merged in (False, True):
        with model_for_generation(model, merged) as generator:
            fixed = generate_summaries(generator, tokenizer, prompts, marker, max_new_tokens=16, batch_size=4)
            continuous = generate_continuously(generator, tokenizer, prompts, marker, max_new_tokens=16, batch_size=4)
        assert continuous == fixed
        assert len(set(fixed)) > 1 and all(fixed)  # different prompts, non-empty summaries: the comparison means something
    assert model.get_base_model().config._attn_implementation == "sdpa"  # given back for training


def test_continuous_batching_names_the_cache_page_as_the_installed_transformers_does():
    """The GPU image's transformers 5.17 calls the KV cache page `block_size`; later ones call it
    `page_size` (and warn on the old name). The one this process has is the one used."""
    import dataclasses

    from transformers import ContinuousBatchingConfig

    from trainables.evaluation import _page_field

    @dataclasses.dataclass
    class ConfigOf517:  # the fields of transformers 5.17's ContinuousBatchingConfig that name the page
        block_size: int = 256
        num_blocks: int | None = None

    assert _page_field(ConfigOf517) == "block_size"
    installed = {field.name for field in dataclasses.fields(ContinuousBatchingConfig)}
    assert _page_field(ContinuousBatchingConfig) == ("page_size" if "page_size" in installed else "block_size")


def test_compiled_decoding_pads_to_one_shape_and_generates_the_summaries_of_fixed_batches(tiny_model_path):
    """evaluation.compiled_decoding through the merged copy: ten dialogues in batches of four, each
    left-padded to max_length (the last filled up with repeats), into a static cache: the summaries
    of dynamic batches, in the prompts' order, none for the fill-up. (On a CPU transformers
    compiles nothing; on a GPU the same call compiles the decoding step.)"""
    import json

    from tests.tiny_model import SAMPLE
    from trainables.config import PromptConfig
    from trainables.evaluation import RougeEvaluation

    model, tokenizer = _adapted_tiny_model(tiny_model_path)
    dialogues = [json.loads(line)["dialogue"] for line in SAMPLE.read_text().splitlines()[:10]]
    fixed = RougeEvaluation(tokenizer, PromptConfig(), 256, 16, 4, merged_copy=True)
    compiled = RougeEvaluation(tokenizer, PromptConfig(), 256, 16, 4, merged_copy=True, compiled_decoding=True)
    prompts = fixed.prompts(dialogues)
    assert len({len(tokenizer(p)["input_ids"]) for p in prompts}) > 1  # the padding to one length is real
    expected = fixed.summaries(model, prompts)
    assert compiled.summaries(model, prompts) == expected
    assert len(expected) == 10 and len(set(expected)) > 1 and all(expected)
