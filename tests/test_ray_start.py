"""A sweep's local Ray starts where Ray's dashboard cannot: `resources.ray_dashboard: true`, the
default, asks for the dashboard where its packages are, and never makes their absence an error. And
the driver's first question to a GPU node, its GPU's memory, is answered without importing torch."""

import os
import subprocess
import sys

import pytest

from tests.helpers import ROOT, fake_nvidia_smi, short_ray_temp

pytestmark = pytest.mark.sweep

# Ray without ray[default]'s packages (pip install ray), as on the GPU machine of 2026-12-04, whose
# sweep failed with "Cannot include dashboard with missing packages." when run asked for it by name.
# Ray decides by importing ray.dashboard.optional_deps; a None in sys.modules makes that import fail.
START_WITHOUT_DASHBOARD_PACKAGES = """
import sys
sys.modules["ray.dashboard.optional_deps"] = None
import ray
from search.tuner import start_ray
start_ray(dashboard=True)
print("started", ray.is_initialized())
ray.shutdown()
"""


def test_the_default_dashboard_setting_starts_ray_where_the_dashboard_packages_are_missing():
    with short_ray_temp() as ray_temp:
        done = subprocess.run([sys.executable, "-c", START_WITHOUT_DASHBOARD_PACKAGES], capture_output=True,
                              text=True, cwd=ROOT, timeout=120, env={**os.environ, "RAY_TMPDIR": str(ray_temp)})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "started True" in done.stdout
    assert "View the dashboard" not in done.stdout + done.stderr


# A local Ray told it has one GPU (this machine has none): the driver reads the GPU's memory on its node
# as it does before every GPU sweep, from nvidia-smi (here a stand-in on PATH), without torch, which on
# this CPU build sees no GPU and would make the query fail: on its own node in the driver itself, where
# nvidia-smi answers, and in a worker given the GPU where it does not.
READ_GPU_MEMORY = """
import os, ray, sys
from trainables.errors import ConfigError
from search.tuner import smallest_gpu_memory_bytes
ray.init(num_gpus=1, include_dashboard=False)
print("driver:", os.getpid())
print("read:", smallest_gpu_memory_bytes())
open(sys.argv[1], "w").write("fail")
try:
    smallest_gpu_memory_bytes()
except ConfigError as refused:
    print("refused:", refused)
ray.shutdown()
"""


def test_the_driver_reads_a_gpu_nodes_memory_from_nvidia_smi_and_names_the_node_where_nothing_can(tmp_path):
    fake_nvidia_smi(tmp_path)
    (tmp_path / "reply").write_text("143771\n")
    with short_ray_temp() as ray_temp:
        # Ray's one GPU is device 99, which no machine has: torch sees none there even where this machine has
        # GPUs (the CPU layers hide them with an empty list, on which Ray refuses to start with a GPU)
        done = subprocess.run([sys.executable, "-c", READ_GPU_MEMORY, str(tmp_path / "reply")], capture_output=True,
                              text=True, cwd=ROOT, timeout=120,
                              env={**os.environ, "RAY_TMPDIR": str(ray_temp), "CUDA_VISIBLE_DEVICES": "99",
                                   "PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"read: {143771 * 2**20}" in done.stdout
    driver = done.stdout.split("driver:")[1].split()[0]
    read, failed, in_worker = [line.split() for line in (tmp_path / "asked").read_text().splitlines()]
    assert read[0] == failed[0] == driver and "-i" not in read  # in the driver: its machine's every GPU
    assert in_worker[0] != driver and in_worker[-2:] == ["-i", "99"]  # where it failed, in a worker: Ray's GPU
    assert "advertises GPUs that torch cannot see" in done.stdout  # then torch, which sees none here
