"""What a sweep's local Ray imports in its idle workers before any trial is theirs: only modules that
ask nothing of CUDA on import, since a process that asked keeps the GPUs it saw then, and Ray gives
a worker its GPU only when a trial starts in it."""

import json
import os
import subprocess
import sys

import pytest

from tests.helpers import ROOT, fake_nvidia_smi, short_ray_temp


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


def _sweep(preload, gpus_per_trial=0.0):
    from search.config import SweepConfig

    return SweepConfig(name="p", model={"name_or_path": "/tmp"},
                       resources={"preload_libraries": preload, "gpus_per_trial": gpus_per_trial})


@pytest.mark.unit
def test_preloading_the_trial_is_refused_where_a_worker_would_keep_gpus_ray_does_not_give_its_trial():
    from search.sweep import preloaded_modules
    from trainables.errors import ConfigError
    from trainables.warm import CUDA_SAFE_IMPORTS

    def machine(gpus):
        return lambda: gpus

    def never_asked():
        raise AssertionError("the machine's GPUs were counted for a mode that does not need them")

    assert preloaded_modules(_sweep(False), never_asked) == ()
    assert preloaded_modules(_sweep(True), never_asked) == CUDA_SAFE_IMPORTS
    # at most one GPU, which every trial shares, or none: every worker may see it
    assert preloaded_modules(_sweep("trial", gpus_per_trial="auto"), machine(1)) == ("trainables.trial",)
    assert preloaded_modules(_sweep("trial", gpus_per_trial=0.25), machine(1)) == ("trainables.trial",)
    assert preloaded_modules(_sweep("trial"), machine(0)) == ("trainables.trial",)
    with pytest.raises(ConfigError, match="at most one GPU, this one has 2: each idle worker would keep them all"):
        preloaded_modules(_sweep("trial", gpus_per_trial=1), machine(2))
    with pytest.raises(ConfigError, match="gpus_per_trial 0 on a machine with a GPU"):
        preloaded_modules(_sweep("trial"), machine(1))


@pytest.mark.unit
def test_preloading_auto_is_the_whole_trial_on_one_gpu_whose_trials_share_it_and_nothing_elsewhere():
    from search.config import SweepConfig
    from search.sweep import preloaded_modules

    def machine(gpus):
        return lambda: gpus

    assert SweepConfig(name="p", model={"name_or_path": "/tmp"}).resources.preload_libraries == "auto"
    assert preloaded_modules(_sweep("auto", gpus_per_trial="auto"), machine(1)) == ("trainables.trial",)
    assert preloaded_modules(_sweep("auto", gpus_per_trial=1), machine(1)) == ("trainables.trial",)
    # never refused: where `trial` would be, or on a CPU machine, auto preloads nothing
    assert preloaded_modules(_sweep("auto", gpus_per_trial="auto"), machine(2)) == ()
    assert preloaded_modules(_sweep("auto"), machine(1)) == ()
    assert preloaded_modules(_sweep("auto", gpus_per_trial="auto"), machine(0)) == ()


@pytest.mark.unit
def test_preload_libraries_reads_auto_true_false_or_trial_from_yaml_and_refuses_anything_else(tmp_path):
    from search.config import load_config
    from trainables.errors import ConfigError

    config = tmp_path / "sweep.yaml"
    config.write_text("name: p\nmodel: {name_or_path: /tmp}\n")
    for written, read in (("trial", "trial"), ("true", True), ("false", False), ("auto", "auto")):
        assert load_config(config, [f"resources.preload_libraries={written}"]).resources.preload_libraries == read
    refusal = "resources.preload_libraries: must be auto, true, false or trial, got 'everything'$"
    with pytest.raises(ConfigError, match=refusal):
        load_config(config, ["resources.preload_libraries=everything"])


# One local Ray for what its preloading workers must do (each Ray started costs CI seconds of its 20 minutes).
# Two light standard modules stand for the libraries, beside torch, whose threads are checked.
PRELOADING_RAY = """
import glob, json, os, sys, time
import ray
from search.tuner import start_ray
start_ray(dashboard=False, preload=["email.mime.text", "torch"], preload_workers=int(sys.argv[1]))
logs = ray._private.worker._global_node.get_logs_dir_path()
def started():
    return sorted(int(path.rsplit("_", 1)[1].split(".")[0]) for path in glob.glob(logs + "/python-core-worker-*.log"))
deadline = time.time() + 60
while not started() and time.time() < deadline:
    time.sleep(0.5)
time.sleep(5)  # Ray starts its idle workers together: any more would be there by now
idle = started()

@ray.remote(num_cpus=1)
class Trial:
    def begin(self):
        imported_before_me = [m for m in ("email.mime.text", "xml.dom.minidom", "torch") if m in sys.modules]
        import torch
        from trainables.warm import take_rays_cpu_threads
        imported_with = torch.get_num_threads()
        take_rays_cpu_threads()
        return os.getpid(), imported_before_me, imported_with, torch.get_num_threads()

pid, imported, imported_with, runs_on = ray.get(Trial.remote().begin.remote())
print(json.dumps({"idle": idle, "trial": pid, "imported": imported, "threads": [imported_with, runs_on]}))
ray.shutdown()
"""


@pytest.mark.sweep
def test_a_local_ray_preloading_starts_the_idle_workers_asked_and_a_trial_takes_one_with_its_modules_and_cpus():
    """A local Ray asked for one preloading worker starts one (Ray's own count, one per CPU, would be more);
    the trial begins in it with the modules imported, and runs torch on the CPUs Ray gave it, not every core."""
    from search.tuner import local_cpus

    assert local_cpus() >= 2  # more than the one asked for
    env = {key: value for key, value in os.environ.items() if key != "OMP_NUM_THREADS"}
    with short_ray_temp() as ray_temp:
        done = subprocess.run([sys.executable, "-c", PRELOADING_RAY, "1"], capture_output=True,
                              text=True, cwd=ROOT, timeout=180, env={**env, "RAY_TMPDIR": str(ray_temp)})
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("{\"idle\"")))
    assert len(seen["idle"]) == 1, seen
    assert seen["trial"] == seen["idle"][0]  # the trial began in the worker that had imported
    assert seen["imported"] == ["email.mime.text", "torch"]  # what it was asked to, and nothing else
    imported_with, trial_runs_on = seen["threads"]
    # torch, imported before Ray set OMP_NUM_THREADS for the trial's 1 CPU, took every core (this machine has 2)
    assert imported_with > 1 and trial_runs_on == 1


# On a GPU machine seen as one GPU: a local Ray preloads everything a trial imports (bitsandbytes asks CUDA
# about the GPU on import), then gives a trial half the GPU in that worker.
TRIAL_IN_A_WORKER_THAT_PRELOADED_IT = """
import os, sys
import ray
from search.tuner import local_gpus, start_ray
print("machine gpus:", local_gpus())
start_ray(dashboard=False, preload=["trainables.trial"], preload_workers=1)

@ray.remote(num_cpus=1, num_gpus=0.5)
class Trial:
    def begin(self):
        had = "bitsandbytes" in sys.modules and "peft" in sys.modules
        from trainables.warm import check_gpus_are_rays
        check_gpus_are_rays()
        import torch
        summed = torch.ones(4, device="cuda").sum().item()
        return had, os.environ["CUDA_VISIBLE_DEVICES"], torch.cuda.device_count(), summed

print("trial:", *ray.get(Trial.remote().begin.remote()))
ray.shutdown()
"""


@pytest.mark.gpu
def test_on_a_one_gpu_machine_a_worker_that_preloaded_the_whole_trial_takes_the_gpu_ray_gives_it():
    with short_ray_temp() as ray_temp:
        done = subprocess.run([sys.executable, "-c", TRIAL_IN_A_WORKER_THAT_PRELOADED_IT], capture_output=True,
                              text=True, cwd=ROOT, timeout=300,
                              env={**os.environ, "RAY_TMPDIR": str(ray_temp), "CUDA_VISIBLE_DEVICES": "0"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "machine gpus: 1" in done.stdout
    assert "trial: True 0 1 4.0" in done.stdout, done.stdout[-2000:]


@pytest.mark.gpu
def test_on_a_gpu_the_driver_reads_from_nvidia_smi_the_memory_torch_sees():
    import torch

    from trainables.memory import nvidia_smi_smallest_gpu_memory_bytes

    smallest = min(torch.cuda.get_device_properties(i).total_memory for i in range(torch.cuda.device_count()))
    # nvidia-smi counts whole MiB of the board; torch what the driver lets CUDA have: within 1 %
    assert nvidia_smi_smallest_gpu_memory_bytes() == pytest.approx(smallest, rel=0.01)


def _idle_worker_memory(tmp_path, *args: str, env: dict | None = None) -> tuple[subprocess.CompletedProcess, dict]:
    out = tmp_path / "idle.json"
    done = subprocess.run([sys.executable, "benchmarks/idle_worker_memory.py", "--out", str(out), *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=300, env=env)
    return done, json.loads(out.read_text()) if out.exists() else {}


@pytest.mark.unit
def test_the_idle_worker_memory_benchmark_reads_nvidia_smi_around_idle_workers_and_refuses_a_machine_without(
        tmp_path):
    done, _ = _idle_worker_memory(tmp_path, "--workers", "2", "json", env={**os.environ, "PATH": "/nonexistent"})
    assert done.returncode == 2 and not (tmp_path / "idle.json").exists()
    assert done.stderr.strip() == "idle_worker_memory: nvidia-smi reads no GPU memory here; this measures a GPU machine"

    fake_nvidia_smi(tmp_path)
    (tmp_path / "reply").write_text("4000\n")
    done, result = _idle_worker_memory(tmp_path, "--workers", "2", "--settle-s", "0", "json",
                                       env={**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert result["workers"] == 2 and len(result["import_s"]) == 2
    assert [reading["used_mib"] for reading in result["readings"].values()] == [4000, 4000, 4000]
    assert result["per_worker_after_imports_mib"] == result["per_worker_after_contexts_mib"] == 0
    # this machine's torch has no CUDA: the control's context could not be made, and the result says so
    assert all(context.startswith("none: ") for context in result["contexts"]), result["contexts"]
    asked = (tmp_path / "asked").read_text()
    assert asked.count("--query-gpu=memory.used") == 3 and asked.count("--query-compute-apps=pid,used_memory") == 3


@pytest.mark.gpu
def test_on_a_gpu_idle_workers_that_imported_the_whole_trial_hold_no_gpu_memory_until_a_trial_uses_it(tmp_path):
    done, result = _idle_worker_memory(tmp_path, "--workers", "2", "trainables.trial")
    assert done.returncode == 0, done.stderr[-3000:]
    # bitsandbytes asks CUDA about the GPUs on import, yet makes no context: an idle worker holds nothing there
    assert result["processes_holding_a_context"]["after_imports"] == 0, result
    assert result["per_worker_after_imports_mib"] < 16, result
    # the control: a context made in each is seen, so the reading above can see one
    assert result["contexts"] == ["made", "made"], result
    assert result["processes_holding_a_context"]["after_contexts"] == 2, result
    assert result["per_worker_after_contexts_mib"] > 100, result
