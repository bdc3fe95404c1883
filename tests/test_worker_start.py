"""benchmarks/worker_start.py: where a fresh trial worker's start goes, timed in fresh processes."""

import json
import subprocess
import sys

import pytest

from tests.helpers import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import worker_start  # noqa: E402  (a script, not a package)


@pytest.mark.unit
def test_importtime_is_summed_by_top_level_package_from_pythons_own_output():
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", "import json, email.message"],
                          capture_output=True, text=True, timeout=60)
    by_package = worker_start.importtime_by_package(done.stderr)
    assert {"json", "email"} <= set(by_package)
    assert "email.message" not in by_package  # submodules count under their package
    assert list(by_package.values()) == sorted(by_package.values(), reverse=True)
    assert by_package["email"] > 0


@pytest.mark.unit
def test_the_summary_gives_each_sides_median_and_spread_of_every_phase():
    runs = [{"side": "as_now", "trial_import_s": t, "ready_s": t + 1, "gpu": False} for t in (3.0, 1.0, 2.0)]
    runs.append({"side": "no_gpu", "trial_import_s": 5.0, "ready_s": 5.0, "gpu": False})
    sides = worker_start.summary(runs)
    assert sides["as_now"]["trial_import_s"] == {"median": 2.0, "min": 1.0, "max": 3.0}
    assert sides["as_now"]["ready_s"]["median"] == 3.0 and sides["as_now"]["runs"] == 3
    assert sides["no_gpu"]["runs"] == 1 and "gpu" not in sides["no_gpu"]


@pytest.mark.unit
@pytest.mark.parametrize("arguments, message", [
    (["--sides", "as_now,warm"],
     "--sides: unknown warm; choose from as_now, context_ahead, context_first, no_gpu, compiler_at_import"),
    (["--sides", ","], "--sides: unknown (none given)"),
    (["--rounds", "0"], "--rounds must be at least 1, not 0"),
    (["--importtime", "/no/such/folder/it.txt"], "folder /no/such/folder does not exist"),
])
def test_bad_arguments_are_refused_in_one_line_with_exit_2_before_any_process_starts(arguments, message, tmp_path):
    out = tmp_path / "start.json"
    done = subprocess.run([sys.executable, "benchmarks/worker_start.py", "--out", str(out), *arguments], cwd=ROOT,
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and done.stderr.strip().count("\n") == 0, done.stderr
    assert message in done.stderr and not out.exists()


@pytest.mark.sweep
def test_each_side_imports_the_trial_in_a_fresh_process_and_times_its_phases(tmp_path):
    out = tmp_path / "start.json"
    done = subprocess.run([sys.executable, "benchmarks/worker_start.py", "--rounds", "1", "--sides",
                           "context_ahead,compiler_at_import", "--out", str(out)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    run, before = result["runs"]
    # as a worker imported the trial before trainables.lazy_compile: bitsandbytes' wrappers loaded TorchInductor
    assert before["side"] == "compiler_at_import" and before["compiler_imported"] is True
    assert run["side"] == "context_ahead" and run["gpu"] is False  # the CPU: no context to make
    # the phases add up to the process's ready time, and the trial's modules took most of it
    assert run["ready_s"] == pytest.approx(run["torch_import_s"] + run["trial_import_s"] + run["join_s"], abs=0.01)
    assert run["trial_import_s"] > 1.0 and run["process_s"] >= run["ready_s"]
    # bitsandbytes' import-time torch.compile wrappers no longer load TorchInductor (trainables.lazy_compile)
    assert run["compiler_imported"] is False
    assert result["sides"]["context_ahead"]["runs"] == 1
