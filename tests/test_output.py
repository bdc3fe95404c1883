"""Library code logs and the CLI decides what a person sees: progress on stdout, problems on
stderr as one line each; no module prints, and none silences a warning for everyone."""

import ast
import logging

import pytest

from search.output import OUR_LOGGERS, configure_cli_output, configure_trial_output
from tests.helpers import ROOT

pytestmark = pytest.mark.unit

LIBRARY = sorted(p for package in ("search", "trainables") for p in (ROOT / package).glob("*.py"))


@pytest.fixture
def restored_loggers():
    saved = {name: (logging.getLogger(name).handlers[:], logging.getLogger(name).level,
                    logging.getLogger(name).propagate) for name in OUR_LOGGERS}
    yield
    for name, (handlers, level, propagate) in saved.items():
        logger = logging.getLogger(name)
        logger.handlers[:], logger.level, logger.propagate = handlers, level, propagate


def test_the_cli_shows_progress_on_stdout_and_problems_on_stderr(restored_loggers, capsys):
    configure_cli_output()
    logging.getLogger("search.sweep").info("experiment folder: /r/x")
    logging.getLogger("trainables.train").debug("a detail for whoever debugs: not shown")
    logging.getLogger("search.sweep").warning("the cluster has 1 GPUs but resources.gpus_per_trial is 0")
    out, err = capsys.readouterr()
    assert out == "experiment folder: /r/x\n"
    assert err == "qlora-sweep: warning: the cluster has 1 GPUs but resources.gpus_per_trial is 0\n"


def test_a_trial_shows_only_its_problems(restored_loggers, capsys):
    configure_trial_output()
    logging.getLogger("trainables.trial").info("a detail")
    logging.getLogger("trainables.train").warning("out of GPU memory; retrying")
    out, err = capsys.readouterr()
    assert (out, err) == ("", "qlora-sweep: out of GPU memory; retrying\n")


def _calls(tree, dotted):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = ast.unparse(node.func)
            if name == dotted:
                yield node


def test_library_code_never_prints():
    printing = [f"{path.relative_to(ROOT)}:{call.lineno}" for path in LIBRARY if path.name != "cli.py"
                for call in _calls(ast.parse(path.read_text()), "print")]
    assert not printing, printing


def test_a_warning_is_silenced_only_around_the_call_that_raises_it():
    """warnings.filterwarnings only inside `with warnings.catch_warnings()`, which restores the filters."""
    global_filters = []
    for path in LIBRARY:
        tree = ast.parse(path.read_text())
        scoped = {id(node) for with_node in ast.walk(tree) if isinstance(with_node, ast.With)
                  if any("catch_warnings" in ast.unparse(item.context_expr) for item in with_node.items)
                  for node in ast.walk(with_node)}
        global_filters += [f"{path.relative_to(ROOT)}:{call.lineno}" for name in ("warnings.filterwarnings",
                           "warnings.simplefilter") for call in _calls(tree, name) if id(call) not in scoped]
    assert not global_filters, global_filters
