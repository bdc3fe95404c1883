"""The trial's only contact with Ray Tune: report each rung with its adapter checkpoint, and
hand back the checkpoint a restarted trial resumes from.

Rungs are the Trainer's save points (every steps_per_rung steps). At each one the Trainer
evaluates validation loss, then saves; on save we add the rung's mean train loss, ROUGE,
throughput and memory, and report metrics plus that checkpoint (adapter and optimizer state,
never the base weights) in one `tune.report`.

A trial whose training diverges (trainables.divergence, read from each step's logged loss) stops
at that step instead: the rung in progress is reported with its validation loss, a ROUGE of 0
that nothing was generated for, `diverged` true, and no checkpoint, and the trial ends.

Each checkpoint also carries the trial's rung history up to it. Tune's driver writes result.json
and its own state on a timer, so a driver killed with -9 can lose rows that the checkpoints
(written by the trial before it reports) still hold; the driver puts them back.
"""

from __future__ import annotations

import contextlib
import math
import os
import resource
import shutil
import statistics
import tempfile
import time
import uuid
from typing import Any, Callable, ContextManager, Iterator, Protocol

import ray
import torch
from ray import tune
from transformers import TrainerCallback

from trainables.checkpoint_files import (RUNG_HISTORY, TRIAL_RECORD, parse_rung_history, rung_history_text,
                                         trial_record_text)
from trainables.divergence import DIVERGED_STEPS, divergence
from trainables.metrics import ROUGE_METRICS


def peak_memory_gb() -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**30
    # ru_maxrss is in KiB on Linux: the process's high-water mark.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


class TrialSession(Protocol):
    """Where a trial's rungs go and where it resumes from."""

    def report(self, metrics: dict[str, Any], checkpoint_dir: str | None) -> None: ...

    def placement(self) -> dict[str, str]: ...

    def checkpoint_to_resume(self) -> ContextManager[str | None]: ...


class TuneSession:
    """Ray Tune's session in the trial's worker: the sweep's TrialSession. A benchmark that runs the
    trial in its own process hands run_trial another (benchmarks/first_rung.py)."""

    def report(self, metrics: dict[str, Any], checkpoint_dir: str | None) -> None:
        if checkpoint_dir is None:  # a diverged rung: nothing worth resuming from
            tune.report(metrics)
        else:
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(checkpoint_dir))

    def placement(self) -> dict[str, str]:
        """Where this trial runs, from Ray itself: its node and the GPU ids Ray gave it."""
        context = ray.get_runtime_context()
        gpus = context.get_accelerator_ids().get("GPU", [])
        return {"node_id": context.get_node_id(), "gpu_ids": ",".join(str(g) for g in gpus)}

    @contextlib.contextmanager
    def checkpoint_to_resume(self) -> Iterator[str | None]:
        """A local copy of the trial's latest checkpoint when Tune restarted it, else None."""
        checkpoint = tune.get_checkpoint()
        if checkpoint is None:
            yield None
            return
        local = tempfile.mkdtemp(prefix="qlora-sweep-resume-")
        try:
            with checkpoint.as_directory() as directory:
                shutil.copytree(directory, local, dirs_exist_ok=True)
            yield local
        finally:
            shutil.rmtree(local, ignore_errors=True)


class StartupClock:
    """Where a trial's start (startup_s) goes: each part the seconds since the part before it, from
    when the worker began the trial. Reported as startup_<part>_s; a fresh worker's first rung spent
    2.0-2.2x a later rung on an H200 (2026-12-04), 15-18 s of it before the first step. A part's own
    parts (`mark_within`, each since the one before it inside the part) are startup_<part>_<name>_s."""

    def __init__(self, started: float):
        self._last = self._last_within = started
        self._within: dict[str, float] = {}
        self.parts: dict[str, float] = {}

    def mark_within(self, name: str) -> None:
        now = time.perf_counter()
        self._within[name] = now - self._last_within
        self._last_within = now

    def mark(self, part: str) -> None:
        now = time.perf_counter()
        self.parts[f"startup_{part}_s"] = now - self._last
        self.parts.update({f"startup_{part}_{name}_s": seconds for name, seconds in self._within.items()})
        self._last = self._last_within = now
        self._within = {}


class RungReporter(TrainerCallback):
    def __init__(self, score_rouge: Callable[[Any, int], dict[str, float]], steps_per_rung: int, trial: dict,
                 session: TrialSession, started: float | None = None, warm_start: bool = False,
                 startup: StartupClock | None = None, loss_examples: int | None = None,
                 divergence_loss_ratio: float | None = None):
        """`loss_examples`: the validation examples the Trainer's validation loss covers (reported
        beside it); `started`: when the trial's worker began this trial (time.perf_counter); `warm_start`:
        whether its worker kept the base model from an earlier trial (trainables.warm); `startup`:
        the parts of the start marked so far, to which the first training step adds the Trainer's;
        `divergence_loss_ratio`: training.divergence_loss_ratio (None: never stop a trial for its loss)."""
        self.score_rouge = score_rouge
        self.session = session
        self.steps_per_rung = steps_per_rung
        self.trial = trial  # the trial's config as JSON, for each checkpoint's TRIAL_RECORD
        self.loss_examples = loss_examples
        self.history: list[dict[str, Any]] = []
        self.warm_start = warm_start
        self._rung_began = time.perf_counter() if started is None else started
        self.startup_s: float | None = None
        self.startup = startup
        self.divergence_loss_ratio = divergence_loss_ratio
        self.first_step_loss: float | None = None  # the untouched base model's loss: what divergence is measured by
        self.recent_losses: list[float] = []  # the last steps' losses, across rungs
        self.diverged: str | None = None  # why, once it has
        self._reset(tokens_seen=0)

    def resume_history(self, checkpoint_dir: str | None) -> None:
        """The rungs reported before the checkpoint this trial restarts from."""
        path = os.path.join(checkpoint_dir or "", RUNG_HISTORY)
        if checkpoint_dir and os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                self.history = parse_rung_history(f.read())
            self.first_step_loss = next((row["first_step_loss"] for row in self.history
                                         if row.get("first_step_loss") is not None), None)

    def _reset(self, tokens_seen: int) -> None:
        self.step_seconds: list[float] = []  # the rung's optimizer steps, each timed alone
        self.step_losses: list[float] = []  # the rung's optimizer steps' training losses
        self.tokens_at_rung_start = tokens_seen
        self.eval_loss = float("nan")
        self.rouge: dict[str, float] = {}
        self.eval_loss_seconds = float("nan")
        self.rouge_seconds = float("nan")
        self._step_started = 0.0
        self._step_ended = time.perf_counter()

    def on_train_begin(self, args, state, control, **kwargs):
        # On resume the Trainer has restored state: the rung starts from the saved token count.
        self._reset(tokens_seen=state.num_input_tokens_seen)
        reset_peak_memory()
        if self.startup_s is None:  # not again for an out-of-memory retry
            self.startup_s = time.perf_counter() - self._rung_began
            if self.startup is not None:
                self.startup.mark("trainer")  # the Trainer built, its data prepared, a checkpoint restored

    def on_step_begin(self, args, state, control, **kwargs):
        self._step_started = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        synchronize_gpu()
        self._step_ended = time.perf_counter()
        self.step_seconds.append(self._step_ended - self._step_started)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or "loss" not in logs:
            return
        # The Trainer logs every step (trainables.train), each step's loss alone
        loss = float(logs["loss"])
        self.step_losses.append(loss)
        self.recent_losses = [*self.recent_losses, loss][-DIVERGED_STEPS:]
        if self.first_step_loss is None:  # step 1's; a resumed trial has it from its history
            self.first_step_loss = loss
        self.diverged = divergence(self.first_step_loss, self.recent_losses, self.divergence_loss_ratio)
        if self.diverged:  # evaluate now, report the rung without a checkpoint, and end the trial
            control.should_evaluate, control.should_save, control.should_training_stop = True, False, True

    def on_evaluate(self, args, state, control, metrics=None, model=None, **kwargs):
        self.eval_loss = float((metrics or {}).get("eval_loss", float("nan")))
        rouge_began = time.perf_counter()
        self.eval_loss_seconds = rouge_began - self._step_ended  # the Trainer's validation loss
        if self.diverged:
            # Its summaries would run to max_new_tokens of noise and score about 0 (0.000-0.017 on an H200)
            self.rouge = {**dict.fromkeys(ROUGE_METRICS, 0.0), "rouge_examples": 0}
        else:
            self.rouge = self.score_rouge(model, state.global_step // self.steps_per_rung)
        synchronize_gpu()
        self.rouge_seconds = time.perf_counter() - rouge_began
        if self.diverged:
            self._report(args, state, checkpoint_dir=None)

    def on_save(self, args, state, control, **kwargs):
        checkpoint_dir = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
        with open(os.path.join(checkpoint_dir, TRIAL_RECORD), "w", encoding="utf-8") as f:
            f.write(trial_record_text(self.trial, state.global_step))
        self._report(args, state, checkpoint_dir)

    def _report(self, args, state, checkpoint_dir: str | None) -> None:
        """The rung's row to Tune, with the checkpoint just saved (None: a diverged rung, cut short)."""
        rung_tokens = state.num_input_tokens_seen - self.tokens_at_rung_start
        train_seconds = sum(self.step_seconds)
        metrics = {
            "rung": math.ceil(state.global_step / self.steps_per_rung),  # a diverged one ends inside its rung
            "step": state.global_step,
            "tokens_seen": int(state.num_input_tokens_seen),
            # the rung's mean, as the Trainer would have logged it once a rung
            "train_loss": sum(self.step_losses) / len(self.step_losses) if self.step_losses else float("nan"),
            "first_step_loss": self.first_step_loss,
            "diverged": bool(self.diverged),
            **({"diverged_why": self.diverged} if self.diverged else {}),
            "eval_loss": self.eval_loss,
            "eval_loss_examples": self.loss_examples,
            **self.rouge,
            "tokens_per_s": rung_tokens / train_seconds if train_seconds else 0.0,
            "peak_memory_gb": peak_memory_gb(),
            "rung_s": time.perf_counter() - self._rung_began,  # wall time since the last report; the first
            # rung's includes the start: imports, data, model load (startup_s), unless the worker was warm
            "train_s": train_seconds,  # of rung_s: the optimizer steps
            "eval_s": self.eval_loss_seconds + self.rouge_seconds,  # of rung_s: validation loss and ROUGE
            "eval_loss_s": self.eval_loss_seconds,  # of eval_s: the validation loss
            "rouge_s": self.rouge_seconds,  # of eval_s: generating the summaries ROUGE scores, and scoring them
            **step_pace(self.step_seconds),
            "startup_s": self.startup_s,
            **(self.startup.parts if self.startup is not None else {}),  # of startup_s, by part
            "warm_start": self.warm_start,
            "micro_batch_size": args.per_device_train_batch_size,  # as planned (grown), halved after an out-of-memory retry
            "gradient_accumulation_steps": args.gradient_accumulation_steps,  # the effective batch's other factor
            "gradient_checkpointing": bool(args.gradient_checkpointing),  # as `auto` resolved it
            **self.session.placement(),
            "report_id": uuid.uuid4().hex,  # ties this result.json row to the checkpoint histories
        }
        # A rung redone after a restart replaces the record of the first attempt.
        self.history = [row for row in self.history if row["step"] < state.global_step]
        self.history.append({**metrics, "pid": os.getpid(), "timestamp": time.time()})
        if checkpoint_dir is not None:
            with open(os.path.join(checkpoint_dir, RUNG_HISTORY), "w", encoding="utf-8") as f:
                f.write(rung_history_text(self.history))
        self.session.report(metrics, checkpoint_dir)
        self._rung_began = time.perf_counter()
        self._reset(tokens_seen=state.num_input_tokens_seen)
        reset_peak_memory()


def step_pace(step_seconds: list[float]) -> dict[str, float | None]:
    """A rung's optimizer steps: its first, the median step, and what the steps took beyond the
    median in all. A trial's first rung on an H200 trained at half its later rungs' tokens/s
    (benchmarks/results/2026-12-01-sweep); a slow median says the whole rung ran slower (GPU
    contention, a slow clock), time beyond it says some steps did, and a slow first step that the
    rung's start did (kernels loaded or compiled, memory the allocator had to get)."""
    if not step_seconds:
        return {"step_s_first": None, "step_s_median": None, "train_s_beyond_median": None}
    median = statistics.median(step_seconds)
    return {"step_s_first": step_seconds[0], "step_s_median": median,
            "train_s_beyond_median": sum(max(0.0, s - median) for s in step_seconds)}


def synchronize_gpu() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def reset_peak_memory() -> None:
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
