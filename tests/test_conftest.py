"""tests/conftest.py's layers: a run that selects any CPU layer (unit, sweep, cluster) hides the machine's
GPUs from itself and its processes, so that those tests train on the CPU they assert; the gpu layer runs in a
pytest of its own, which sees them."""

import os
import subprocess
import sys

import pytest

from tests.conftest import LAYERS, selected_layers
from tests.helpers import ROOT


@pytest.mark.unit
@pytest.mark.parametrize("markexpr, layers", [
    ("not cluster", {"unit", "sweep", "gpu"}),  # pyproject's addopts
    ("", set(LAYERS)),
    ("gpu", {"gpu"}),
    ("cluster", {"cluster"}),
    ("unit or gpu", {"unit", "gpu"}),
    ("not (unit or sweep or cluster)", {"gpu"}),
])
def test_the_layers_a_marker_expression_selects_are_read_with_pytests_own_parser(markexpr, layers):
    assert selected_layers(markexpr) == layers


@pytest.mark.unit
def test_a_run_of_the_cpu_layers_hides_every_gpu_from_its_tests_and_the_processes_they_start():
    import torch

    assert os.environ["CUDA_VISIBLE_DEVICES"] == ""  # this test is in one; Ray and its workers inherit it
    assert torch.cuda.device_count() == 0


def _skip_reason_in_a_run_of(markexpr: str) -> str:
    test = "tests/test_conftest.py::test_the_gpu_layer_runs_where_it_sees_the_gpus"
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-n", "0", "-p", "no:cacheprovider", "-rs",
                           "-o", "addopts=", "-m", markexpr, test], capture_output=True, text=True, cwd=ROOT,
                          timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return next((line for line in done.stdout.splitlines() if line.startswith("SKIPPED")), "ran")


@pytest.mark.unit
def test_the_gpu_test_of_a_mixed_run_skips_saying_the_run_hid_the_gpus_and_a_run_of_the_gpu_layer_alone_does_not():
    assert "which a run of the CPU layers hides from itself" in _skip_reason_in_a_run_of("unit or gpu")
    # alone it hides nothing: it says torch sees no GPU (this run's processes see none), not that it hid them
    alone = _skip_reason_in_a_run_of("gpu")
    assert "torch sees none" in alone and "hides" not in alone, alone


@pytest.mark.gpu
def test_the_gpu_layer_runs_where_it_sees_the_gpus():
    import torch

    assert os.environ.get("CUDA_VISIBLE_DEVICES") != "" and torch.cuda.is_available()
