"""What a person sees: where log records go, and how much the libraries a sweep loads say.

Library code in search/ and trainables/ logs through `logging.getLogger(__name__)` and never
prints. The command line calls `configure_cli_output` once; each trial's worker, a process of its
own (on another node, maybe), calls `configure_trial_output` before it imports the trial's
libraries. The libraries' own settings are environment variables they read at import, set only
where the user has not set them, so `TRANSFORMERS_VERBOSITY=info` still shows what they say.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from pathlib import Path
from typing import Iterator, TextIO

OUR_LOGGERS = ("search", "trainables")
TRIAL_LINE_PREFIX = "qlora-sweep: "  # a trial's own warnings: the driver shows them, whatever else goes to driver.log
LIBRARY_LOGGERS = ("ray", "optuna")  # what a sweep's driver hears from the libraries it runs
LIBRARY_SETTINGS = {
    "TRANSFORMERS_VERBOSITY": "error",  # its notices repeat in every trial; errors still show
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",  # model loading's bars, once per trial
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",  # tokenizing's bars, once per trial and split
    "TOKENIZERS_PARALLELISM": "false",  # its fork warning in every worker; trials are parallel already
}


class _BelowWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.WARNING


class _Problem(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"qlora-sweep: {record.levelname.lower()}: {super().format(record)}"


def quiet_libraries() -> None:
    for name, value in LIBRARY_SETTINGS.items():
        os.environ.setdefault(name, value)
    # A library imported before this (the CLI called in-process, as tests do) has read them already.
    if "datasets" in sys.modules and os.environ["HF_DATASETS_DISABLE_PROGRESS_BARS"] == "1":
        sys.modules["datasets"].disable_progress_bars()
    if os.environ["TRANSFORMERS_VERBOSITY"] == "error":
        logging.getLogger("transformers").setLevel(logging.ERROR)
    # On a CPU with AVX512-BF16, bitsandbytes warns at import, in every process, that the optional
    # `kernels` package for its packed CPU layout is missing; trials keep the plain 4-bit layout,
    # which needs none (trainables.model.keep_4bit_layout_on_cpu).
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)


def configure_cli_output() -> None:
    """Progress lines on stdout as plain text, warnings and errors on stderr."""
    quiet_libraries()
    progress = logging.StreamHandler(sys.stdout)
    progress.addFilter(_BelowWarning())
    progress.setFormatter(logging.Formatter("%(message)s"))
    problems = logging.StreamHandler(sys.stderr)
    problems.setLevel(logging.WARNING)
    problems.setFormatter(_Problem("%(message)s"))
    for name in OUR_LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers[:] = [progress, problems]
        logger.setLevel(logging.INFO)
        logger.propagate = False


def configure_trial_output() -> None:
    """In a trial's worker: only warnings and errors, each line marked as ours (Ray prefixes the worker)."""
    quiet_libraries()
    problems = logging.StreamHandler(sys.stderr)
    problems.setFormatter(logging.Formatter(TRIAL_LINE_PREFIX + "%(message)s"))
    for name in OUR_LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers[:] = [problems]
        logger.setLevel(logging.WARNING)
        logger.propagate = False


@contextlib.contextmanager
def libraries_output_to(log_path: Path | None) -> Iterator[TextIO]:
    """While a sweep runs, what Ray, Tune and Optuna say (log records, status boxes, hints,
    warnings) goes to `log_path` rather than the screen; yields the screen's stream, for the
    sweep's own view. None (--verbose): everything stays where it goes.

    Our own loggers keep their handlers, which hold the real streams. Lines Ray forwards from
    trial workers are sent to the same file by search.tuner.start_ray.
    """
    screen = sys.stdout
    if log_path is None:
        yield screen
        return
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a", buffering=1, encoding="utf-8", errors="replace") as log:
        to_log = logging.StreamHandler(log)
        to_log.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        kept: dict[str, list[logging.Handler]] = {}
        names = [name for name in logging.Logger.manager.loggerDict if name.split(".")[0] in LIBRARY_LOGGERS]
        for name in {*LIBRARY_LOGGERS, *names}:
            logger = logging.getLogger(name)
            if logger.handlers or name in LIBRARY_LOGGERS:
                kept[name] = logger.handlers[:]
                logger.handlers[:] = [to_log]
        streams = sys.stdout, sys.stderr
        sys.stdout = sys.stderr = log  # what the libraries print() rather than log
        try:
            yield screen
        finally:
            sys.stdout, sys.stderr = streams
            for name, handlers in kept.items():
                logging.getLogger(name).handlers[:] = handlers


@contextlib.contextmanager
def our_logs_to(handler: logging.Handler | None) -> Iterator[None]:
    """Our loggers' records through `handler` for a while (the live table's, which prints them
    above itself); None: as they are."""
    if handler is None:
        yield
        return
    kept = {name: logging.getLogger(name).handlers[:] for name in OUR_LOGGERS}
    for name in OUR_LOGGERS:
        logging.getLogger(name).handlers[:] = [handler]
    try:
        yield
    finally:
        for name, handlers in kept.items():
            logging.getLogger(name).handlers[:] = handlers
