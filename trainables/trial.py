"""One trial of the sweep: the QLoRA recipe, rung by rung, as the driver planned it.

The driver hands in a `TrialConfig` with every choice made: the hyperparameters Optuna picked and
the memory plan (recompute, micro-batch, merged copy, generation batch). What follows reads like
the recipe: data and prompts, the 4-bit model, LoRA, then training rung by rung, each rung ending
in evaluation, a report to Tune and an adapter checkpoint.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

from transformers import set_seed

from trainables import warm
from trainables.config import TrainingConfig, TrialConfig
from trainables.data import load_dialogues, tokenize_for_training, validation_for_loss
from trainables.evaluation import RougeEvaluation
from trainables.model import (attach_lora, compile_decoder_layers, load_quantized_model, prepare_for_training,
                               use_cudnn_attention, use_deterministic_algorithms)
from trainables.prompt import load_tokenizer, tokenizing_threads
from trainables.report import RungReporter, StartupClock, TrialSession, TuneSession
from trainables.train import adapter_state, build_trainer, train_with_oom_retry

EVAL_LOSS_BATCH = 16  # padding-free rows get a dense (tokens x tokens) attention mask under SDPA: keep them short


def run_trial(trial: TrialConfig, started: float | None = None, session: TrialSession | None = None,
              callbacks: Sequence[Any] = ()) -> None:
    """`started`: when the trial's worker began it (time.perf_counter), imports included. `session`:
    where rungs are reported and a restarted trial resumes from, Ray Tune's unless a benchmark runs
    the trial in its own process; `callbacks`: more Trainer callbacks (a benchmark's timers)."""
    started = time.perf_counter() if started is None else started
    warm.check_gpus_are_rays()
    warm.take_rays_cpu_threads()
    startup = StartupClock(started)
    startup.mark("imports")  # the worker's imports for the trial (a warm worker has them), and its plan
    session = TuneSession() if session is None else session
    hp = trial.hyperparameters

    # Data and prompts, kept by this worker process for the trials it runs next (trainables.warm)
    tokenizer = warm.tokenizer_for(trial.model, load_tokenizer)
    startup.mark_within("tokenizer")  # in a fresh worker, with the transformers modules it loads on first use
    dialogues = warm.dialogues_for(trial.data, load_dialogues)
    startup.mark_within("dialogues")

    def tokenized(name: str, rows: Any) -> Any:  # kept by this worker under `name`; tokenized on Ray's CPUs
        with tokenizing_threads(warm.rays_cpu_threads() or 1):
            return warm.tokenized_for(name, trial.model, trial.prompt, hp.max_length, lambda: tokenize_for_training(
                rows, tokenizer, trial.prompt, hp.max_length, trial.data.reuse_tokenized))

    # The validation loss every rung covers evaluation.loss_examples' dialogues: where ROUGE ranks, rung 1's
    loss_rows = validation_for_loss(dialogues["validation"], trial.evaluation, trial.max_rungs, trial.data.seed)
    train_set, eval_set = tokenized("train", dialogues["train"]), tokenized(f"validation[{len(loss_rows)}]", loss_rows)
    startup.mark_within("tokenized")  # from datasets' cache, or tokenized here
    if len(train_set) == 0:
        raise ValueError(f"max_length={hp.max_length}: no training summary fits; raise search.max_length")
    if len(eval_set) == 0:  # the Trainer's loss over nothing is NaN, which would rank where eval_loss ranks
        raise ValueError(f"max_length={hp.max_length}: none of the {len(loss_rows)} validation summaries the loss "
                         "covers fits; raise search.max_length")
    evaluation = RougeEvaluation.for_trial(trial, tokenizer)
    prompts = evaluation.prompts(dialogues["validation"]["dialogue"])
    references = list(dialogues["validation"]["summary"])
    startup.mark("data")

    # The 4-bit model (kept from this worker's last trial, its LoRA taken off) with this trial's
    # LoRA on top, drawn from the trial's seed; activations recomputed where the plan says memory needs it
    base, warm_start = warm.base_model_for(trial.model, load_quantized_model)
    startup.mark_within("base")  # loaded, or kept: the last LoRA taken off and the last trial's memory freed
    use_cudnn_attention(trial.plan.cudnn_attention)  # a process-wide switch: the worker's last trial may have set it
    # deterministic kernels and torch's fill of new memory: process-wide switches too
    use_deterministic_algorithms(trial.training.deterministic, trial.training.fill_uninitialized_memory)
    prepared = prepare_for_training(base, trial.training.gradient_checkpointing, trial.training.float32_dense_layers)
    startup.mark_within("prepared")
    set_seed(trial.training.seed)
    model = attach_lora(prepared, hp)
    if trial.training.compile_layers:
        compile_decoder_layers(model, activations_kept=trial.training.activations_kept)  # the host limits an eager step
    warm.remember_adapted(model)
    initial_adapter = adapter_state(model)  # where an out-of-memory retry with no checkpoint restarts
    startup.mark_within("lora")
    startup.mark("model")

    # Train rung by rung; each rung ends in evaluation, a report and an adapter checkpoint.
    # Early rungs score ROUGE on a prefix of one fixed-seed shuffle: the same dialogues for every trial.
    def score_rouge(trained_model: Any, rung: int) -> dict[str, float]:
        chosen = trial.evaluation.dialogues_at(rung, trial.max_rungs, len(prompts), trial.data.seed)
        scores = evaluation.rouge(trained_model, [prompts[i] for i in chosen], [references[i] for i in chosen])
        return {**scores, "rouge_examples": len(chosen)}

    reporter = RungReporter(score_rouge, trial.training.steps_per_rung, loss_examples=len(eval_set),
                            trial=trial.model_dump(mode="json"),
                            divergence_loss_ratio=trial.training.divergence_loss_ratio,
                            session=session, started=started, warm_start=warm_start, startup=startup)

    def trainer_for(training: TrainingConfig) -> Any:
        return build_trainer(
            model, tokenizer, train_set, eval_set, training, hp,
            total_steps=trial.total_steps,
            eval_batch_size=min(trial.evaluation.batch_size, EVAL_LOSS_BATCH),
            output_dir=os.path.join(os.getcwd(), "trainer"),
            callbacks=[reporter, *callbacks],
        )

    with session.checkpoint_to_resume() as resume_dir:
        reporter.resume_history(resume_dir)
        train_with_oom_retry(trainer_for, trial.training, hp, resume_dir, model, initial_adapter)
