"""benchmarks/warmup_curve.py: a fresh machine's speed for sweep trials under load, and the warm-up it implies."""

import datetime
import json
import sys

import pytest

from tests.helpers import ROOT

def _script():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import warmup_curve
    return warmup_curve


def _load(*tokens_per_s, start=0):
    return [{"phase": "load", "phase_t_s": 30.0 * (i + 1), "aggregate_tokens_per_s": rate, "time": start + i}
            for i, rate in enumerate(tokens_per_s)]


@pytest.mark.unit
def test_the_warm_up_a_load_needed_ends_before_three_warm_runs_in_a_row_and_a_later_dip_is_counted_apart():
    curve = _script()
    # slow, slower still, one warm run too early (the next falls back), three warm in a row, a dip, warm again
    records = ([{"phase": "matmul", "phase_t_s": 60.0, "time": -1}]
               + _load(700, 650, 960, 800, 970, 1000, 1010, 900, 990, 1000, 1020, 1005)
               + [{"phase": "after_idle", "phase_t_s": 30.0, "aggregate_tokens_per_s": 900, "time": 99}])
    summary = curve.summarize(records)
    assert summary["plateau_tokens_per_s"] == 1000  # the median of the last five load runs
    assert summary["first_run_share"] == 0.7
    # warm from run 5 (970, 1000, 1010): the warm-up was the first four runs, which ended 120 s into the load
    assert summary["warm_after_load_s"] == 120.0
    assert summary["dips_after_warm"] == 1  # the 900
    assert summary["after_idle_shares"] == [0.9]


@pytest.mark.unit
def test_a_load_warm_from_its_first_run_needed_no_warm_up_one_never_warm_names_none_and_a_short_one_no_plateau():
    curve = _script()
    assert curve.summarize(_load(990, 1000, 1010, 1000, 995))["warm_after_load_s"] == 0.0
    # never three warm runs in a row: no warm-up was long enough
    never = curve.summarize(_load(1000, 800, 1000, 800, 1000, 800, 1000))
    assert never["warm_after_load_s"] is None and never["dips_after_warm"] == 0
    assert curve.summarize(_load(700, 1000)) == {"load_runs": 2, "plateau_tokens_per_s": None}


@pytest.mark.unit
def test_each_record_gets_the_gpu_clocks_sampled_while_its_run_trained_and_a_line_smi_left_unfilled_is_dropped():
    curve = _script()
    base = datetime.datetime(2026, 12, 7, 9, 0, 0)

    def line(second, sm, power="300.5"):
        return f"{(base + datetime.timedelta(seconds=second)).strftime('%Y/%m/%d %H:%M:%S.%f')[:-3]}, {sm}, 2619, " \
               f"40, {power}, 41"

    samples = curve.parse_clocks("\n".join([line(1, 1200), line(2, 1400), line(3, 1980), line(4, 1980, "[N/A]"),
                                            line(5, 1980), "garbage"]))
    assert [s["sm_mhz"] for s in samples] == [1200, 1400, 1980, 1980]  # the [N/A] line and the garbage are gone
    t0 = base.timestamp()
    records = [{"time": t0 + 2.5}, {"time": t0 + 10}, {"time": t0 + 20}]
    curve.attach_clocks(records, samples)
    assert records[0]["sm_mhz"] == 1300 and records[0]["power_w"] == 300.5  # samples 1 and 2
    assert records[1]["sm_mhz"] == 1980  # samples 3 and 5
    assert records[2]["sm_mhz"] is None  # nothing sampled while it ran


@pytest.mark.parametrize("arguments, message", [
    (["--trials", "0"], "--trials 0: expected 1 or more"),
    (["--load-s", "-1"], "--load-s -1.0: expected 0 or more"),
    (["--data", "/nonexistent"], "--data /nonexistent: no train.jsonl there"),
    (["--setting", "fast"], "--setting fast: expected a=1,b=true (TrainingConfig fields)"),
    (["--model", "/nonexistent"], "--model /nonexistent: no config.json there"),
])
@pytest.mark.unit
def test_bad_arguments_get_one_line_exit_2_and_nothing_written(arguments, message, tmp_path, capsys):
    curve = _script()
    out = tmp_path / "curve.json"
    argv = ["--data", str(ROOT / "trainables" / "samples"), "--tokenizer", str(tmp_path), "--out", str(out)]
    assert curve.main(argv + arguments) == 2
    assert capsys.readouterr().err == f"warmup_curve: {message}\n"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.unit
def test_probes_measure_the_host_on_a_machine_without_a_gpu_and_leave_the_gpu_ones_empty():
    curve = _script()
    measured = curve.probes(fresh_bytes=16 << 20)  # the default GiB's first touch took 14.5 s on a CI-sized machine
    assert measured["cpu_loop_ms"] > 0 and measured["fresh_memory_gbps"] > 0
    assert measured["launch_us"] is None and measured["matmul_tflops"] is None
    counters = curve.HostCounters()
    sum(range(3_000_000))  # some CPU time between the two reads
    since = counters.since_last()
    assert 0 < since["cpu_busy"] <= 1 and since["cpu_steal"] >= 0 and since["page_faults_per_s"] >= 0


@pytest.mark.sweep  # two trial processes: about half a minute
def test_a_run_on_the_cpu_records_every_phase_in_order_with_the_workers_loaded_once(tiny_model_path, tmp_path):
    """On a model folder (--model), as the sweep benchmark's warm-up runs it; nothing written beside the JSON."""
    import subprocess

    out = tmp_path / "curve.json"
    done = subprocess.run(
        [sys.executable, "benchmarks/warmup_curve.py", "--model", str(tiny_model_path), "--data", "trainables/samples",
         "--tokenizer", str(tiny_model_path), "--out", str(out), "--setting", "fused_lm_head=false",
         "--trials", "2", "--matmul-s", "0", "--load-s", "0", "--idle-s", "0", "--after-idle-runs", "1",
         "--steps", "2", "--segment-warmup", "1", "--micro-batch-size", "2", "--max-length", "256",
         "--train-examples", "16"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert [r["phase"] for r in result["records"]] == ["cold", "loaded", "matmul", "load", "idle", "after_idle"]
    assert done.stderr.count(": loaded") == 2, done.stderr[-3000:]  # two workers, loaded once for both runs
    runs = [r for r in result["records"] if "aggregate_tokens_per_s" in r]
    assert [r["phase"] for r in runs] == ["load", "after_idle"] and all(r["aggregate_tokens_per_s"] > 0 for r in runs)
    assert all(r["cpu_loop_ms"] > 0 for r in result["records"])
    assert result["summary"] == {"load_runs": 1, "plateau_tokens_per_s": None}  # one load run names no plateau
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curve.json"]  # no nvidia-smi here: no clocks file
    assert "plateau None tokens/s" in done.stdout


@pytest.mark.unit
def test_the_sweep_benchmark_warms_up_with_its_configs_trials_on_its_model_at_its_longest_length(tmp_path):
    """sweep_benchmark.py's warm-up runs warmup_curve.py as the config's trials run, for --warmup-s of load."""
    _script()
    from sweep_benchmark import load_config, warm_up_command

    model = tmp_path / "smolhf"
    sweep = load_config(ROOT / "configs" / "sweep_benchmark_gpu.yaml",
                        [f"model.name_or_path={model}", "data.path=/stage/dialogsum", "search.max_concurrent_trials=4"])
    argv = warm_up_command(90, sweep, tmp_path / "warmup-1.json")
    assert argv[1].endswith("benchmarks/warmup_curve.py")
    given = dict(zip(argv[2::2], argv[3::2]))
    assert given == {"--model": str(model), "--tokenizer": str(model), "--data": "/stage/dialogsum", "--trials": "4",
                     "--micro-batch-size": "16", "--max-length": "512", "--matmul-s": "0", "--load-s": "90",
                     "--idle-s": "0", "--after-idle-runs": "0", "--out": str(tmp_path / "warmup-1.json")}
    fixed = load_config(ROOT / "configs" / "sweep_benchmark_gpu.yaml", ["search.max_length=448"])
    assert dict(zip(argv[2::2], warm_up_command(90, fixed, tmp_path / "w.json")[3::2]))["--max-length"] == "448"


@pytest.mark.unit
def test_the_warm_ups_trials_get_as_many_cpu_threads_as_ray_gives_a_trial_unless_the_environment_says(monkeypatch):
    _script()
    from sweep_benchmark import load_config, warm_up_environment

    sweep = load_config(ROOT / "configs" / "sweep_benchmark_gpu.yaml", ["resources.cpus_per_trial=3"])
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setenv("QLORA_SWEEP_PROBE", "kept")
    environment = warm_up_environment(sweep)
    assert environment["OMP_NUM_THREADS"] == "3" and environment["QLORA_SWEEP_PROBE"] == "kept"
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert warm_up_environment(sweep)["OMP_NUM_THREADS"] == "1"

