"""When a trial's training has diverged (training.divergence_loss_ratio): its loss has gone well past where
the untouched base model began, and stayed there, or is no longer a number.

The rule compares each optimizer step's training loss with the trial's first step's: at that step LoRA's B
matrices are still zero, so it is the base model's loss on a batch of this data. A learning rate too high for
the model throws the adapter's weights far enough that the model predicts worse than it did before training;
on an H200 (SmolLM2-135M, DialogSum) every trial at a learning rate of 6.4e-3 to 9e-3 ended its first rung at a
mean training loss of 13.9-23.3 against 1.6-2.4 for the rest, and scored a ROUGE-L of 0.000-0.017 after
generating its full length of tokens for every dialogue. Several steps in a row, not one, so that one hard
batch after an easy first one does not stop a healthy trial.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

DIVERGED_STEPS = 3  # consecutive steps at or above the ratio that make a divergence
# A loss must also have risen this much (nats a token) above the first step's: a model that already fits the data
# (a first loss of 0.05, say) has steps of 0.1 from noise alone, which are twice its first loss but no divergence
MIN_RISE = 1.0


def divergence(first_step_loss: float | None, step_losses: Sequence[float], ratio: float | None) -> str | None:
    """Why the trial has diverged, in a few words, or None while it has not. `step_losses`: the losses of its
    steps so far, oldest first, the newest last (only the last DIVERGED_STEPS matter); `ratio`: the config's
    divergence_loss_ratio, None for never."""
    if ratio is None or not step_losses:
        return None
    if not math.isfinite(step_losses[-1]):
        return f"training loss {step_losses[-1]}"
    if first_step_loss is None or not math.isfinite(first_step_loss) or first_step_loss <= 0:
        return None
    recent = step_losses[-DIVERGED_STEPS:]
    bar = max(ratio * first_step_loss, first_step_loss + MIN_RISE)
    if len(recent) == DIVERGED_STEPS and all(loss >= bar for loss in recent):
        bar_text = f"{ratio:g}x" if bar == ratio * first_step_loss else f"{MIN_RISE:g} above"
        return f"training loss {_shown(recent)}, each at least {bar_text} its first step's {first_step_loss:.3g}"
    return None


def _shown(losses: Sequence[float]) -> str:
    return ", ".join(f"{loss:.3g}" for loss in losses)
