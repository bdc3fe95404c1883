"""What a person sees: where log records go, and how much the libraries a sweep loads say.

Library code in search/ and trainables/ logs through `logging.getLogger(__name__)` and never
prints. The command line calls `configure_cli_output` once; each trial's worker, a process of its
own (on another node, maybe), calls `configure_trial_output` before it imports the trial's
libraries. The libraries' own settings are environment variables they read at import, set only
where the user has not set them, so `TRANSFORMERS_VERBOSITY=info` still shows what they say.
"""

from __future__ import annotations

import logging
import os
import sys

OUR_LOGGERS = ("search", "trainables")
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
    problems.setFormatter(logging.Formatter("qlora-sweep: %(message)s"))
    for name in OUR_LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers[:] = [problems]
        logger.setLevel(logging.WARNING)
        logger.propagate = False
