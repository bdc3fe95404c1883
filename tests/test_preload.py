"""What a sweep's local Ray imports in its idle workers before any trial is theirs: only modules that
ask nothing of CUDA on import, since a process that asked keeps the GPUs it saw then, and Ray gives
a worker its GPU only when a trial starts in it."""

import os
import subprocess
import sys

import pytest

from tests.helpers import ROOT, short_ray_temp

# Imports the given modules after torch with every way torch asks CUDA about its devices watched;
# prints what asked. On a CPU build torch answers without a GPU, but the question is what counts.
CUDA_QUESTIONS_ON_IMPORT = """
import importlib, sys, traceback
import torch
asked = []
def watched(name, function):
    def asking(*args, **kwargs):
        asked.append(name + " from " + traceback.extract_stack()[-2].filename.rsplit("site-packages/", 1)[-1])
        return function(*args, **kwargs)
    return asking
torch.cuda.is_available = watched("is_available", torch.cuda.is_available)
torch.cuda.device_count = watched("device_count", torch.cuda.device_count)
torch.cuda._lazy_init = watched("_lazy_init", torch.cuda._lazy_init)
torch.cuda.get_device_capability = watched("get_device_capability", torch.cuda.get_device_capability)
for module in sys.argv[1:]:
    importlib.import_module(module)
print("asked:", asked)
"""


def _cuda_questions(*modules: str) -> str:
    done = subprocess.run([sys.executable, "-c", CUDA_QUESTIONS_ON_IMPORT, *modules], capture_output=True,
                          text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip().splitlines()[-1]


@pytest.mark.sweep
def test_the_modules_preloaded_in_idle_workers_ask_nothing_of_cuda_and_bitsandbytes_would():
    from trainables.warm import CUDA_SAFE_IMPORTS

    assert _cuda_questions(*CUDA_SAFE_IMPORTS) == "asked: []"
    # the watch sees a question when there is one: bitsandbytes asks on import, why it is not preloaded
    assert "bitsandbytes" in _cuda_questions("bitsandbytes")


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


# On a GPU machine, what the watch above stands for: a process that sees every GPU imports the given
# modules, then hides them all, as Ray sets CUDA_VISIBLE_DEVICES when it gives a worker its trial (none
# here), and runs AFTER. A process whose imports initialized CUDA keeps the GPUs it saw then.
AFTER_HIDING = """
import importlib, os, sys
for module in sys.argv[1:]:
    importlib.import_module(module)
os.environ["CUDA_VISIBLE_DEVICES"] = ""
"""
# the CUDA runtime itself asked (not NVML, which reads the variable again)
GPUS_SEEN = "import torch; print('seen:', torch._C._cuda_getDeviceCount())"
# what a trial does first in its worker
TRIAL_CHECK = """
from trainables.warm import check_gpus_are_rays
try:
    check_gpus_are_rays()
    print("trial may run")
except RuntimeError as refused:
    print("refused:", refused)
"""


def _after_hiding(then: str, *modules: str) -> str:
    env = {key: value for key, value in os.environ.items() if key != "CUDA_VISIBLE_DEVICES"}
    done = subprocess.run([sys.executable, "-c", AFTER_HIDING + then, *modules], capture_output=True,
                          text=True, cwd=ROOT, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip().splitlines()[-1]


@pytest.mark.gpu
def test_on_a_gpu_a_worker_that_preloaded_still_takes_the_gpus_ray_gives_it_and_one_that_imported_bitsandbytes_not():
    from trainables.warm import CUDA_SAFE_IMPORTS

    assert _after_hiding(GPUS_SEEN, *CUDA_SAFE_IMPORTS) == "seen: 0"
    assert _after_hiding(GPUS_SEEN, "bitsandbytes") != "seen: 0"


@pytest.mark.gpu
def test_on_a_gpu_a_trial_refuses_a_worker_that_kept_gpus_ray_did_not_give_it():
    assert _after_hiding(TRIAL_CHECK) == "trial may run"
    refused = _after_hiding(TRIAL_CHECK, "bitsandbytes")
    assert refused.startswith("refused: this trial's worker sees ") and "but was given 0" in refused, refused
    assert "resources.preload_libraries: false" in refused
