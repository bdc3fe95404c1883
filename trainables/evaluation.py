"""ROUGE as a trial scores it, assembled once (`RougeEvaluation`): the recipe's prompt cut to the
trial's max_length, batched greedy generation (through the merged copy where the plan says so),
cut at the end marker, scored with rouge_score. The trial, `best --eval-file` and the benchmarks
all score through it.

The figures equal rouge_score's (with stemming) averaged over examples, which is what
`evaluate.load("rouge")` computes with use_aggregator=False; that loader fetches its script from
the Hugging Face hub, so it is not used here.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, fields
from typing import Any

import torch
from rouge_score import rouge_scorer
import transformers
from transformers import GenerationConfig, StoppingCriteriaList, StopStringCriteria

from trainables.config import PromptConfig, TrialConfig
from trainables.errors import ConfigError
from trainables.metrics import BEST_REFERENCE, MEAN_OVER_REFERENCES, ROUGE_METRICS
from trainables.model import compute_autocast, model_for_generation
from trainables.prompt import encode_prompt

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


@dataclass(frozen=True)
class RougeEvaluation:
    """How dialogues are summarized and scored: prompts, generation, the cut, ROUGE."""

    tokenizer: Any
    prompt: PromptConfig
    max_length: int  # tokens a prompt may take: the trial's max_length (its dialogue is shortened to fit)
    max_new_tokens: int
    batch_size: int  # dialogues generated at once
    merged_copy: bool = False  # generate through a dense merged copy (trainables.model.merged_dense_copy)
    continuous_batching: bool = False  # transformers' generate_batch instead of fixed batches
    compiled_decoding: bool = False  # through the merged copy: a static cache, which transformers compiles

    @classmethod
    def for_trial(cls, trial: TrialConfig, tokenizer: Any) -> "RougeEvaluation":
        return cls(tokenizer, trial.prompt, trial.hyperparameters.max_length, trial.evaluation.max_new_tokens,
                   trial.evaluation.batch_size, trial.evaluation.merged_copy, trial.evaluation.continuous_batching,
                   trial.evaluation.compiled_decoding)

    def prompts(self, dialogues: list[str]) -> list[str]:
        return [encode_prompt(self.tokenizer, self.prompt, d, self.max_length) for d in dialogues]

    def summaries(self, model: Any, prompts: list[str]) -> list[str]:
        with model_for_generation(model, self.merged_copy) as generator:
            if self.continuous_batching:
                return generate_continuously(generator, self.tokenizer, prompts, self.prompt.end_marker,
                                             self.max_new_tokens, self.batch_size)
            # transformers compiles no 4-bit model's decoding: the static cache pays only through the copy
            static_length = self.max_length if self.compiled_decoding and self.merged_copy else None
            return generate_summaries(generator, self.tokenizer, prompts, self.prompt.end_marker, self.max_new_tokens,
                                      self.batch_size, static_length)

    def rouge(self, model: Any, prompts: list[str], references: list[str]) -> dict[str, float]:
        """Mean ROUGE F1 against one reference per prompt."""
        return rouge_scores(self.summaries(model, prompts), references)

    def rouge_by_rule(self, model: Any, prompts: list[str], references: list[list[str]]) -> dict[str, dict[str, float]]:
        """Mean ROUGE F1 against several references per prompt, by both rules of trainables.metrics."""
        return rouge_scores_multi(self.summaries(model, prompts), references)


def _sentences_on_lines(text: str) -> str:
    # rougeLsum treats newlines as sentence breaks. nltk's punkt would need a download,
    # so split on sentence-final punctuation instead.
    return "\n".join(s for s in _SENTENCE_END.split(text.strip()) if s)


def rouge_scores(predictions: list[str], references: list[str]) -> dict[str, float]:
    """Mean F1 of ROUGE-1/2/L/Lsum (0..1), rouge_score with the Porter stemmer."""
    return rouge_scores_multi(predictions, [[r] for r in references])[BEST_REFERENCE]


def rouge_scores_multi(predictions: list[str], references: list[list[str]]) -> dict[str, dict[str, float]]:
    """Mean F1 over examples, each example scored against several references by both rules.

    best_reference: per ROUGE type, the best-matching reference's F1 (what rouge_score's score_multi
    picks; taken here from the per-reference scores the mean needs anyway, so each pair is scored once).
    mean_over_references: per ROUGE type, the F1 averaged over the example's references.
    """
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    if not predictions:
        raise ValueError("no predictions to score")
    scorer = rouge_scorer.RougeScorer(list(ROUGE_METRICS), use_stemmer=True)
    totals = {rule: dict.fromkeys(ROUGE_METRICS, 0.0) for rule in (BEST_REFERENCE, MEAN_OVER_REFERENCES)}
    for prediction, targets in zip(predictions, references):
        if not targets:
            raise ValueError("an example without a reference")
        lines = _sentences_on_lines(prediction)
        targets = [_sentences_on_lines(t) for t in targets]
        each = [scorer.score(t, lines) for t in targets]
        for name in ROUGE_METRICS:
            totals[BEST_REFERENCE][name] += max(s[name].fmeasure for s in each)
            totals[MEAN_OVER_REFERENCES][name] += sum(s[name].fmeasure for s in each) / len(each)
    return {rule: {name: total / len(predictions) for name, total in sums.items()} for rule, sums in totals.items()}


def cut_at_end_marker(text: str, end_marker: str) -> str:
    return text.split(end_marker, 1)[0].strip()


def generate_summaries(
    model: Any, tokenizer: Any, prompts: list[str], end_marker: str, max_new_tokens: int, batch_size: int,
    static_length: int | None = None,
) -> list[str]:
    """Greedy summaries, batched with left padding and the KV cache, longest prompts first.

    `static_length`: every batch is `batch_size` prompts left-padded to this many tokens (the last
    one filled up with repeats of its last prompt, their summaries dropped) and generates into a
    static KV cache. One shape for every batch of every evaluation is what lets transformers
    compile the decoding step once (on a GPU, with CUDA graphs: one launch a step instead of the
    model's hundreds) rather than for each batch. Padding costs prefill work, not summaries: the
    masked positions change no greedy choice (tested against dynamic batches)."""
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    outputs: list[str] = [""] * len(prompts)
    # Built once, not by generate for each batch: it scans the whole vocabulary (0.1-0.3 s a batch
    # for SmolLM2's 49k tokens on a CPU core; ~0.8 s profiled on the H200's host)
    stop_at_marker = StoppingCriteriaList([StopStringCriteria(tokenizer, [end_marker])])
    padding_side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # decoder-only: new tokens must follow each prompt directly
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(order), batch_size):
            batch_ids = order[start : start + batch_size]
            texts = [prompts[i] for i in batch_ids]
            if static_length is None:
                batch, cache = tokenizer(texts, return_tensors="pt", padding=True), {}
            else:
                texts += texts[-1:] * (batch_size - len(texts))
                batch = tokenizer(texts, return_tensors="pt", padding="max_length", max_length=static_length)
                cache = {"cache_implementation": "static"}
            batch = {k: v.to(model.device) for k, v in batch.items()}
            with torch.no_grad(), compute_autocast(model):
                generated = model.generate(
                    **batch,
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    use_cache=True,
                    stopping_criteria=stop_at_marker,
                    pad_token_id=tokenizer.pad_token_id,
                    **cache,
                )
            new_tokens = generated[:, batch["input_ids"].shape[1] :]
            for i, text in zip(batch_ids, tokenizer.batch_decode(new_tokens, skip_special_tokens=True)):
                outputs[i] = cut_at_end_marker(text, end_marker)
    finally:
        tokenizer.padding_side = padding_side
        if was_training:
            model.train()
    return outputs


CONTINUOUS_PAGE_TOKENS = 64  # the paged cache's unit: a sequence's cache rounds up to it (256, the default, wastes more)


def _page_field(config_class: type) -> str:
    """The name of the KV cache page's size in tokens: `page_size` since transformers 5.18 or so,
    `block_size` before (5.17, the GPU image's, has only that; later ones warn on it)."""
    names = {field.name for field in fields(config_class)}
    return "page_size" if "page_size" in names else "block_size"


def generate_continuously(
    model: Any, tokenizer: Any, prompts: list[str], end_marker: str, max_new_tokens: int, batch_size: int
) -> list[str]:
    """Greedy summaries through transformers' continuous batching (`generate_batch`), cut at the end
    marker: what generate_summaries gives, without a batch running as long as its longest summary.

    At most `batch_size` dialogues generate at once, in a paged KV cache sized for them (the memory
    plan's generation batch); each one that finishes makes room for the next waiting. It stops at
    EOS or max_new_tokens, not at the marker: trained summaries emit EOS right after it, and the cut
    makes the text the same either way.
    """
    try:  # here, not at the top: transformers versions without it still run every other path
        from transformers import ContinuousBatchingConfig
    except ImportError:
        raise ConfigError("evaluation.continuous_batching: true needs a transformers with continuous batching "
                          f"(ContinuousBatchingConfig); this one is {transformers.__version__}") from None
    if not prompts:
        return []
    ids = [tokenizer(prompt)["input_ids"] for prompt in prompts]
    longest_prompt = max(len(i) for i in ids)
    cache = ContinuousBatchingConfig(
        **{_page_field(ContinuousBatchingConfig): CONTINUOUS_PAGE_TOKENS},
        num_blocks=batch_size * math.ceil((longest_prompt + max_new_tokens) / CONTINUOUS_PAGE_TOKENS),
        max_requests_per_batch=batch_size,
        max_batch_tokens=batch_size * longest_prompt,  # a prefill no larger than a fixed batch's
        use_async_batching=False,  # it would double the cache, beyond the memory plan
    )
    config = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=tokenizer.eos_token_id,
                              pad_token_id=tokenizer.pad_token_id)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), compute_autocast(model):
            results = model.generate_batch(inputs=ids, generation_config=config, continuous_batching_config=cache,
                                           progress_bar=False)
    finally:
        if was_training:
            model.train()
    outputs = sorted(results.values(), key=lambda output: int(output.request_id.rsplit("_", 1)[1]))
    if [output.prompt_ids for output in outputs] != ids:
        raise RuntimeError("continuous batching returned summaries for other prompts than it was given")
    return [cut_at_end_marker(tokenizer.decode(output.generated_tokens, skip_special_tokens=True), end_marker)
            for output in outputs]
