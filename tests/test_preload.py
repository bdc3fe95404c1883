"""What a sweep's local Ray imports in its idle workers before any trial is theirs: only modules that
ask nothing of CUDA on import, since a process that asked keeps the GPUs it saw then, and Ray gives
a worker its GPU only when a trial starts in it."""

import os
import subprocess
import sys

import pytest

from tests.helpers import ROOT, short_ray_temp


def _probed(*modules: str) -> dict:
    """benchmarks/cuda_on_import.py's probe of the modules imported together in one fresh process: who
    asked CUDA about its devices (watched after torch; on a CPU build torch answers without a GPU, but
    the question is what counts), and on a GPU machine how many GPUs it still sees once they are hidden."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from cuda_on_import import probe

    result = probe(list(modules))
    assert "error" not in result, result
    return result


@pytest.mark.sweep
def test_the_modules_preloaded_in_idle_workers_ask_nothing_of_cuda_and_bitsandbytes_would():
    from trainables.warm import CUDA_SAFE_IMPORTS

    assert _probed(*CUDA_SAFE_IMPORTS)["asked"] == []
    # the watch sees a question when there is one: bitsandbytes asks on import, why it is not preloaded
    assert any("bitsandbytes/" in frame for asked in _probed("bitsandbytes")["asked"] for frame in asked["from"])


START_WITH_PRELOAD = """
import sys
import ray
from search.tuner import start_ray
start_ray(dashboard=False, preload=sys.argv[1:])

@ray.remote(num_cpus=1)
class Trial:
    def imported_before_me(self, modules):
        return [module for module in modules if module in sys.modules]

trial = Trial.remote()
print("imported:", ray.get(trial.imported_before_me.remote(["email.mime.text", "xml.dom.minidom"])))
ray.shutdown()
"""


@pytest.mark.sweep
def test_a_local_rays_workers_have_the_preloaded_modules_before_a_trial_begins_in_them():
    # two light standard modules stand for the libraries: what is checked is that the worker imported them
    with short_ray_temp() as ray_temp:
        done = subprocess.run([sys.executable, "-c", START_WITH_PRELOAD, "email.mime.text"], capture_output=True,
                              text=True, cwd=ROOT, timeout=180, env={**os.environ, "RAY_TMPDIR": str(ray_temp)})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "imported: ['email.mime.text']" in done.stdout


THREADS_AFTER_PRELOAD = """
import ray
from search.tuner import start_ray
start_ray(dashboard=False, preload=["torch"])

@ray.remote(num_cpus=1)
def trial_threads():
    import torch
    from trainables.warm import take_rays_cpu_threads
    imported_with = torch.get_num_threads()
    take_rays_cpu_threads()
    return imported_with, torch.get_num_threads()

print("threads:", *ray.get(trial_threads.remote()))
ray.shutdown()
"""


@pytest.mark.sweep
def test_a_trial_in_a_worker_that_preloaded_torch_runs_on_the_cpus_ray_gave_it_not_every_core():
    env = {key: value for key, value in os.environ.items() if key != "OMP_NUM_THREADS"}
    with short_ray_temp() as ray_temp:
        done = subprocess.run([sys.executable, "-c", THREADS_AFTER_PRELOAD], capture_output=True, text=True,
                              cwd=ROOT, timeout=180, env={**env, "RAY_TMPDIR": str(ray_temp)})
    assert done.returncode == 0, done.stderr[-3000:]
    imported_with, trial_runs_on = map(int, done.stdout.split("threads:")[1].split())
    # torch, imported before Ray set OMP_NUM_THREADS for the task's 1 CPU, took every core (this machine has 2)
    assert imported_with > 1
    assert trial_runs_on == 1


# On a GPU machine, what the watch above stands for: a process that sees every GPU imports the given
# modules, then hides them all, as Ray sets CUDA_VISIBLE_DEVICES when it gives a worker its trial (none
# here), and does what a trial does first in its worker. A process whose imports initialized CUDA keeps
# the GPUs it saw then.
TRIAL_CHECK_AFTER_HIDING = """
import importlib, os, sys
for module in sys.argv[1:]:
    importlib.import_module(module)
os.environ["CUDA_VISIBLE_DEVICES"] = ""
from trainables.warm import check_gpus_are_rays
try:
    check_gpus_are_rays()
    print("trial may run")
except RuntimeError as refused:
    print("refused:", refused)
"""


def _trial_check_after_hiding(*modules: str) -> str:
    env = {key: value for key, value in os.environ.items() if key != "CUDA_VISIBLE_DEVICES"}
    done = subprocess.run([sys.executable, "-c", TRIAL_CHECK_AFTER_HIDING, *modules], capture_output=True,
                          text=True, cwd=ROOT, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip().splitlines()[-1]


@pytest.mark.gpu
def test_on_a_gpu_a_worker_that_preloaded_still_takes_the_gpus_ray_gives_it_and_one_that_imported_bitsandbytes_not():
    from trainables.warm import CUDA_SAFE_IMPORTS

    assert _probed(*CUDA_SAFE_IMPORTS)["gpus_seen_after_hiding"] == 0
    assert _probed("bitsandbytes")["gpus_seen_after_hiding"] != 0


@pytest.mark.gpu
def test_on_a_gpu_a_trial_refuses_a_worker_that_kept_gpus_ray_did_not_give_it():
    assert _trial_check_after_hiding() == "trial may run"
    refused = _trial_check_after_hiding("bitsandbytes")
    assert refused.startswith("refused: this trial's worker sees ") and "but was given 0" in refused, refused
    assert "resources.preload_libraries: false" in refused
