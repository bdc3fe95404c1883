"""What a person watches while a sweep runs: one row per trial, or one line per event.

On a terminal, a compact table is redrawn in place (rich): each trial's searched values, its
state, its rung and the sweep's metric at that rung, the best trial so far marked; below it,
elapsed time, trials done and the share of the GPUs in use. Anywhere else (CI, `ray job logs`, a
file) it writes one plain line per event: started, rung reported, stopped early, diverged,
finished, failed. Ray's own output goes to the experiment's driver.log meanwhile (search.output).

This module knows nothing of Ray: search.tuner turns Tune's callback hooks into these events.
Tune pickles its callbacks into the experiment folder, so they cannot hold the view; they find
the one this driver process shows through `current_view()`.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, TextIO

from rich.console import Console
from rich.live import Live
from rich.table import Table

PENDING, RUNNING, STOPPED_EARLY, FINISHED, FAILED = "pending", "running", "stopped early", "finished", "failed"
DIVERGED = "diverged"  # stopped by its own training loss (training.divergence_loss_ratio), not by ASHA
ENDED = (STOPPED_EARLY, DIVERGED, FINISHED, FAILED)
REDRAW_EVERY_S = 1.0  # a redraw between events, for the clock


@dataclass
class TrialLine:
    trial_id: str
    values: dict[str, Any]
    state: str = PENDING
    rung: int = 0
    metric: float | None = None  # at its last rung
    examples: int | None = None  # validation dialogues that metric was scored on
    best_by_examples: dict[int, float] = field(default_factory=dict)  # its best metric per scoring size


class SweepView:
    """The sweep's trials as events arrive. `interactive`: a table redrawn in place on `stream`;
    otherwise one line per event on `stream`."""

    def __init__(self, *, metric: str, mode: str, max_rungs: int, num_trials: int, searched: list[str],
                 stream: TextIO, interactive: bool, validation_examples: int | None = None,
                 cluster_gpus: float = 0.0, cluster_cpus: float = 0.0, clock: Callable[[], float] = time.monotonic):
        self.metric, self.mode, self.max_rungs, self.num_trials = metric, mode, max_rungs, num_trials
        self.searched = searched
        self.validation_examples = validation_examples  # what a whole-set score covers
        self.stream = stream
        self.interactive = interactive
        self.cluster_gpus, self.cluster_cpus = cluster_gpus, cluster_cpus
        self.clock = clock
        self.started_at = clock()
        self.trials: dict[str, TrialLine] = {}
        self.gpus_in_use = 0.0
        self.cpus_in_use = 0.0
        self._live: Any = None
        self._last_draw = 0.0

    # --- events --------------------------------------------------------------------------------

    def trial_seen(self, trial_id: str, values: dict[str, Any]) -> TrialLine:
        if trial_id not in self.trials:
            self.trials[trial_id] = TrialLine(trial_id, {k: values.get(k) for k in self.searched})
        return self.trials[trial_id]

    def trial_started(self, trial_id: str, values: dict[str, Any], after_rung: int = 0) -> None:
        """A trial's worker started: a new trial, or (after_rung > 0) one continuing from its checkpoint."""
        line = self.trial_seen(trial_id, values)
        line.state = RUNNING
        line.rung = max(line.rung, after_rung)
        how = f"continues after rung {after_rung}" if after_rung else "started"
        self._event(f"trial {trial_id} {how}: {self._values(line)}")

    def rung_reported(self, trial_id: str, rung: int, value: float | None, examples: int | None,
                      diverged: str | None = None, step: int | None = None) -> None:
        """`diverged`: why the trial's training diverged in this rung, at `step` (it then ends; its
        score was not measured)."""
        line = self.trial_seen(trial_id, {})
        if diverged:
            line.state, line.rung, line.metric, line.examples = DIVERGED, rung, None, None
            at = f"step {step} of " if step else ""
            self._event(f"trial {trial_id} diverged at {at}rung {rung}/{self.max_rungs}: {diverged}; stopped")
            return
        line.state = line.state if line.state != PENDING else RUNNING
        line.rung, line.metric, line.examples = rung, value, examples
        if _finite(value):
            size = examples or 0
            kept = line.best_by_examples.get(size)
            if kept is None or self._better(value, kept):
                line.best_by_examples[size] = value
        mark = " (best so far)" if self.best_trial_id() == trial_id else ""
        self._event(f"trial {trial_id} rung {rung}/{self.max_rungs}: {self._metric_text(line)}{mark}")

    def trial_ended(self, trial_id: str, error: str | None = None) -> None:
        line = self.trial_seen(trial_id, {})
        if line.state == DIVERGED:
            return  # said when it reported the rung it diverged in
        if error is not None:
            line.state = FAILED
            self._event(f"trial {trial_id} failed at rung {line.rung + 1}: {error}")
        elif line.rung < self.max_rungs:
            line.state = STOPPED_EARLY
            self._event(f"trial {trial_id} stopped early by ASHA after rung {line.rung}: {self._metric_text(line)}")
        else:
            line.state = FINISHED
            self._event(f"trial {trial_id} finished {line.rung} rungs: {self._metric_text(line)}")

    def trial_retrying(self, trial_id: str, error: str) -> None:
        self._event(f"trial {trial_id} failed ({error}); retrying from its last checkpoint")

    def resources_in_use(self, gpus: float, cpus: float) -> None:
        self.gpus_in_use, self.cpus_in_use = gpus, cpus

    def tick(self) -> None:
        if self.interactive and self.clock() - self._last_draw >= REDRAW_EVERY_S:
            self._draw()

    # --- the picture --------------------------------------------------------------------------

    def best_trial_id(self) -> str | None:
        """The best trial so far, among those scored on the most validation dialogues any trial
        has been scored on (early rungs may score a subset: a subset's score is not comparable)."""
        sizes = [size for line in self.trials.values() for size in line.best_by_examples]
        if not sizes:
            return None
        widest = max(sizes)
        scored = [line for line in self.trials.values() if widest in line.best_by_examples]
        pick = max if self.mode == "max" else min
        return pick(scored, key=lambda line: line.best_by_examples[widest]).trial_id

    def footer(self) -> str:
        done = sum(line.state in ENDED for line in self.trials.values())
        if self.cluster_gpus:
            share = f"GPUs in use: {self.gpus_in_use:.2f} of {self.cluster_gpus:g}"
        elif not self.cluster_cpus:
            share = "Ray is starting"
        else:
            share = f"no GPU; CPUs in use: {self.cpus_in_use:g} of {self.cluster_cpus:g}"
        return f"{_clock(self.clock() - self.started_at)} elapsed, {done}/{self.num_trials} trials done, {share}"

    def table(self) -> Any:
        table = Table(box=None, pad_edge=False, header_style="bold")
        for column in ("", "trial", *self.searched, "state", "rung", self.metric):
            table.add_column(column, justify="right" if column in ("rung", self.metric) else "left")
        best = self.best_trial_id()
        for line in self.trials.values():
            table.add_row("*" if line.trial_id == best else "", line.trial_id,
                          *(_short(line.values.get(k)) for k in self.searched), line.state,
                          f"{line.rung}/{self.max_rungs}" if line.rung else "-",
                          self._metric_text(line, bare=True) if line.rung else "-")
        table.caption = self.footer()
        table.caption_justify = "left"
        return table

    def start(self) -> None:
        if self.interactive:
            console = Console(file=self.stream, force_terminal=True)
            self._live = Live(self.table(), console=console, auto_refresh=False,
                              redirect_stdout=False, redirect_stderr=False)
            self._live.start()

    def stop(self) -> None:
        if self._live is not None:
            self._draw()
            self._live.stop()
            self._live = None
        else:
            self._write(self.footer())

    def say(self, text: str) -> None:
        """A line of the driver's own (a log record) above the table, or among the events."""
        if self._live is not None:
            self._live.console.print(text, markup=False, highlight=False)
        else:
            self._write(text)

    # --- helpers ------------------------------------------------------------------------------

    def _event(self, text: str) -> None:
        if self.interactive:
            self._draw()
        else:
            self._write(f"[{_clock(self.clock() - self.started_at)}] {text}")

    def _draw(self) -> None:
        self._last_draw = self.clock()
        if self._live is not None:
            self._live.update(self.table(), refresh=True)

    def _write(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()

    def _better(self, value: float, than: float) -> bool:
        return value > than if self.mode == "max" else value < than

    def _values(self, line: TrialLine) -> str:
        return ", ".join(f"{k}={_short(v)}" for k, v in line.values.items())

    def _metric_text(self, line: TrialLine, bare: bool = False) -> str:
        if not _finite(line.metric):
            return "-" if bare else f"{self.metric}=-"
        text = f"{line.metric:.4f}" if bare else f"{self.metric}={line.metric:.4f}"
        if line.examples and self.validation_examples and line.examples < self.validation_examples:
            text += f" (on {line.examples})" if bare else f" (on {line.examples} of {self.validation_examples} dialogues)"
        return text


class ViewLogHandler(logging.Handler):
    """The driver's own log lines, shown through the view so that they do not tear the table."""

    def __init__(self, view: SweepView):
        super().__init__(logging.INFO)
        self.view = view

    def emit(self, record: logging.LogRecord) -> None:
        text = self.format(record)
        self.view.say(text if record.levelno < logging.WARNING else f"qlora-sweep: {record.levelname.lower()}: {text}")


_current: SweepView | None = None


def current_view() -> SweepView | None:
    return _current


def show(view: SweepView | None) -> None:
    """Make `view` the one this process's Tune callbacks report to (None: none)."""
    global _current
    _current = view


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return "-" if value is None else str(value)


def _clock(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 60}:{seconds % 60:02d}"
