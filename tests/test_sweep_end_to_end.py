"""A whole sweep through the real stack: CLI, local Ray, Tune, OptunaSearch, ASHA, TRL,
peft, bitsandbytes 4-bit on a tiny Llama, then `best` and `report` on its folder."""

import json
import shutil

import pytest

from tests.conftest import E2E_MAX_RUNGS as MAX_RUNGS
from tests.conftest import E2E_NUM_TRIALS as NUM_TRIALS
from tests.conftest import tiny_sweep_dict, write_config
from tests.helpers import run_cli, trial_dirs

pytestmark = pytest.mark.sweep


def test_run_prints_the_experiment_folder_and_the_best_trial(sweep):
    experiment, done = sweep
    assert f"experiment folder: {experiment}" in done.stdout
    assert "best trial:" in done.stdout and "adapter checkpoint:" in done.stdout
    # resources.preload_libraries: auto, the default, preloads nothing on a machine without a GPU
    assert "idle workers import" not in done.stdout
    assert (experiment / "qlora_sweep.yaml").is_file()


def test_run_shows_one_plain_line_per_event_and_keeps_rays_own_output_in_driver_log(sweep):
    experiment, done = sweep
    out = done.stdout
    assert out.count(" started: lora_r=") == NUM_TRIALS
    assert f"rung 1/{MAX_RUNGS}: eval_loss=" in out and f"rung {MAX_RUNGS}/{MAX_RUNGS}: eval_loss=" in out
    assert "stopped early by ASHA after rung" in out and f"finished {MAX_RUNGS} rungs" in out
    assert f"{NUM_TRIALS}/{NUM_TRIALS} trials done" in out
    for rays_own in ("Trial status", "╭", "Checkpoint successfully created", "tensorboard --logdir",
                     "Token authentication", "A new study created"):
        assert rays_own not in out + done.stderr, rays_own
    assert max(len(line) for line in out.splitlines()) < 200
    log = (experiment / "driver.log").read_text()
    assert "Trial status" in log and "Checkpoint successfully created" in log  # Tune's table, a worker's line
    assert "View the dashboard at" in log  # resources.ray_dashboard: true, the default


def test_every_trial_runs_and_asha_stops_at_least_one_early(sweep):
    experiment, _ = sweep
    dirs = trial_dirs(experiment)
    assert len(dirs) == NUM_TRIALS
    rungs = [len((d / "result.json").read_text().splitlines()) for d in dirs]
    assert min(rungs) >= 1
    assert any(r < MAX_RUNGS for r in rungs), f"ASHA stopped no trial: rungs per trial {rungs}"
    assert any(r == MAX_RUNGS for r in rungs)
    configs = {tuple(sorted(json.loads((d / "params.json").read_text()).items())) for d in dirs}
    assert len(configs) == NUM_TRIALS  # Optuna proposed a new configuration each time


def test_each_report_has_the_rung_metrics(sweep):
    experiment, _ = sweep
    rows = [json.loads(line) for line in (trial_dirs(experiment)[0] / "result.json").read_text().splitlines()]
    for rung, row in enumerate(rows, start=1):
        assert row["rung"] == rung and row["step"] == 2 * rung
        for key in ("tokens_seen", "train_loss", "eval_loss", "rouge1", "rouge2", "rougeL", "rougeLsum",
                    "tokens_per_s", "peak_memory_gb"):
            assert isinstance(row[key], (int, float)), key
        assert row["checkpoint_dir_name"]
        assert row["rouge_examples"] == [2, 4, 6][rung - 1]  # evaluation.rung_examples [2, 4], then all 6
        assert row["eval_loss_examples"] == 6  # eval_loss ranks this sweep: every validation dialogue, every rung


def test_ranking_by_rouge_uses_only_scores_on_the_whole_validation_set(sweep):
    from dataclasses import replace

    from search.results import best_trial, format_leaderboard, load_experiment, trial_rows

    experiment, _ = sweep
    loaded = load_experiment(str(experiment))
    by_rouge = replace(loaded, config={**loaded.config, "scheduler": {**loaded.config["scheduler"], "metric": "rougeL"}})
    rows = trial_rows(by_rouge)
    finished = [r for r in rows if r["best_row"] is not None]
    stopped = [r for r in rows if r["best_row"] is None]
    assert finished and stopped  # ASHA stopped some before the last, whole-set rung
    assert all(r["best_row"]["rouge_examples"] == 6 for r in finished)
    assert all(r["best_row_on_subset"]["rouge_examples"] < 6 for r in stopped)
    assert rows.index(finished[-1]) < rows.index(stopped[0])  # subset-only trials rank after
    best = best_trial(by_rouge)
    assert best["trial_id"] in {r["trial_id"] for r in finished}
    assert best["checkpoint"].endswith(best_row_checkpoint(rows, best["trial_id"]))
    leaderboard = format_leaderboard(by_rouge)
    for row in stopped:  # each subset-only trial with the score it has, and on how many dialogues
        subset = row["best_row_on_subset"]
        assert f"({subset['rougeL']:.4f} on {int(subset['rouge_examples'])} dialogues)" in leaderboard


def best_row_checkpoint(rows, trial_id):
    return next(r for r in rows if r["trial_id"] == trial_id)["best_row"]["checkpoint_dir_name"]


def _size(path):
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def test_checkpoints_hold_the_adapter_only_and_are_bounded_per_trial(sweep):
    experiment, _ = sweep
    largest_checkpoint = max(_size(c) for c in experiment.glob("*/checkpoint_*"))
    # At most trials x kept checkpoints x one checkpoint, plus small per-trial logs.
    assert _size(experiment) <= NUM_TRIALS * (2 * largest_checkpoint + 512 * 1024)
    for trial in trial_dirs(experiment):
        checkpoints = sorted(trial.glob("checkpoint_*"))
        assert 1 <= len(checkpoints) <= 2  # checkpoints_kept
        for checkpoint in checkpoints:
            assert (checkpoint / "adapter_model.safetensors").is_file()
            assert not (checkpoint / "model.safetensors").exists()
            assert (checkpoint / "qlora_sweep_trial.json").is_file()


def test_best_adapter_loads_onto_the_base_with_peft_and_generates(sweep, tiny_model_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    experiment, _ = sweep
    done = run_cli("best", experiment, "--json")
    assert done.returncode == 0, done.stderr
    best = json.loads(done.stdout)
    assert best["metric"] == "eval_loss" and best["mode"] == "min"
    losses = [json.loads(line)["eval_loss"] for d in trial_dirs(experiment)
              for line in (d / "result.json").read_text().splitlines()]
    assert best["metrics"]["eval_loss"] == pytest.approx(min(losses))
    assert set(best["hyperparameters"]) == {"lora_r", "lora_alpha", "learning_rate", "max_length"}

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_path)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_path)
    model = PeftModel.from_pretrained(base, best["checkpoint"])
    trained_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert trained_b and any(p.abs().sum() > 0 for p in trained_b)  # B starts at zero: it trained
    prompt = tokenizer("#Person1#: Hello.", return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**prompt, max_new_tokens=5, do_sample=False)
    assert out.shape[1] == prompt["input_ids"].shape[1] + 5


def test_report_ranks_every_trial_with_status_and_rungs(sweep):
    experiment, _ = sweep
    done = run_cli("report", experiment)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert "ranked by eval_loss" in lines[0]
    assert lines[1].split()[:2] == ["trial", "status"] and "rungs" in lines[1]
    assert len(lines) == 2 + NUM_TRIALS
    assert "STOPPED_EARLY" in done.stdout and "TERMINATED" in done.stdout


def test_best_and_report_work_on_a_copy_of_the_folder(sweep, tmp_path):
    experiment, _ = sweep
    copy = shutil.copytree(experiment, tmp_path / "elsewhere")
    done = run_cli("best", copy, "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["checkpoint"].startswith(str(copy))
    assert run_cli("report", copy).returncode == 0


def test_tensorboard_has_each_trials_scalars_and_hyperparameters(sweep):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    experiment, _ = sweep
    for trial in trial_dirs(experiment):
        events = EventAccumulator(str(trial))
        events.Reload()
        assert "ray/tune/rougeL" in events.Tags()["scalars"]
        assert "ray/tune/eval_loss" in events.Tags()["scalars"]
        assert events.PluginTagToContent("hparams"), f"no HParams in {trial.name}"


def test_the_throughput_benchmark_reads_a_sweep_folder(sweep, tmp_path):
    import subprocess
    import sys

    from tests.helpers import ROOT

    experiment, _ = sweep
    out = tmp_path / "summary.json"
    done = subprocess.run([sys.executable, "benchmarks/sweep_throughput.py", str(experiment), "--json", str(out)],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    (summary,) = json.loads(out.read_text())
    assert len(summary["trials"]) == NUM_TRIALS and summary["total_tokens"] > 0
    assert summary["aggregate_tokens_per_s"] > 0 and len(summary["nodes_used"]) == 1
    assert summary["per_gpu"] == {}  # CPU trials: no GPU to aggregate over


def test_best_scores_its_adapter_on_a_test_file_with_three_references_by_both_rules(sweep, tmp_path):
    from tests.tiny_model import SAMPLE

    experiment, _ = sweep
    rows = [json.loads(line) for line in SAMPLE.read_text().splitlines()[:5]]
    test_file = tmp_path / "test.jsonl"
    test_file.write_text("".join(json.dumps({
        "id": r["id"], "dialogue": r["dialogue"], "summary1": r["summary"], "summary2": "Nothing alike here.",
        "summary3": r["summary"].upper()}) + "\n" for r in rows) + json.dumps({"id": "x", "dialogue": "", "summary1": "s"}) + "\n")

    done = run_cli("best", experiment, "--json", "--eval-file", test_file, "--max-examples", "5")
    assert done.returncode == 0, done.stderr[-3000:]
    scores = json.loads(done.stdout)["eval_file"]
    assert scores["examples"] == 5 and scores["skipped_rows"] == 1
    assert scores["reference_fields"] == ["summary1", "summary2", "summary3"]
    assert set(scores["rules"]) == {"best_reference", "mean_over_references"}
    for name in ("rouge1", "rouge2", "rougeL", "rougeLsum"):
        assert scores["best_reference"][name] >= scores["mean_over_references"][name] >= 0

    from search.results import format_file_scores

    text = format_file_scores(scores)
    assert "5 dialogues (1 rows skipped), references: summary1, summary2, summary3" in text
    assert "best_reference (per example" in text and "mean_over_references (per example" in text


@pytest.mark.parametrize("extra,message", [
    (["--eval-file", "/nonexistent/test.jsonl"], "--eval-file /nonexistent/test.jsonl does not exist"),
    (["--max-examples", "3"], "--reference-fields and --max-examples go with --eval-file"),
    (["--eval-file", "{file}.txt"], "expected one of .jsonl, .json, .csv, .parquet"),
    (["--test"], "--test: this sweep held out no test dialogues (data.test_examples is 0)"),
])
def test_best_refuses_a_bad_evaluation_request_with_one_line(sweep, tmp_path, extra, message):
    experiment, _ = sweep
    test_file = tmp_path / "test.jsonl"
    test_file.write_text(json.dumps({"dialogue": "#Person1#: Hi.", "summary": "A greeting."}) + "\n")
    (tmp_path / "test.jsonl.txt").write_text("not data\n")
    done = run_cli("best", experiment, *[a.format(file=test_file) for a in extra])
    assert done.returncode == 2
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_the_sweep_benchmark_runs_its_arms_scores_their_best_on_held_out_dialogues_and_summarizes(
        tiny_model_path, tmp_path):
    """benchmarks/sweep_benchmark.py for real on the tiny model: zero-shot, Ray Tune by hand and
    qlora-sweep, each arm's best adapter scored on the test dialogues held out of train, the second
    searching arm after a cut chain resumed (as the GPU chains run, one arm per call if need be)."""
    import subprocess
    import sys

    from tests.helpers import ROOT

    config = write_config(tmp_path / "c.yaml", tiny_sweep_dict(
        tiny_model_path, tmp_path / "r", data={"max_train_examples": 32, "max_validation_examples": 4,
                                               "test_examples": 5},
        search={"num_trials": 2, "max_concurrent_trials": 1, "lora_alpha": None, "lora_alpha_ratio": {"choice": [1, 2]}},
        scheduler={"max_rungs": 2, "grace_period": 1}, evaluation={"max_new_tokens": 4}))
    out = tmp_path / "out"
    # A chain cut during qlora-sweep's arm: zero-shot and by hand's arm ran and were scored, and
    # qlora-sweep's experiment folder was started but never scored (here, before its first report).
    # --resume keeps the by-hand arm, sets the cut folder aside and runs qlora-sweep beside it; the
    # pairs of the two arms are then scored again, by hand's kept one included.
    first = subprocess.run([sys.executable, "benchmarks/sweep_benchmark.py", str(config), "--seeds", "0", "--out",
                            str(out), "--arms", "zero_shot", "plain_script", "--gpus", "1"],
                           cwd=ROOT, capture_output=True, text=True)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-3000:]
    (out / "seed0" / "qlora-sweep-s0").mkdir()
    done = subprocess.run([sys.executable, "benchmarks/sweep_benchmark.py", str(config), "--seeds", "0", "--out",
                           str(out), "--arms", "plain_script", "qlora_sweep", "--resume", "--gpus", "1",
                           "--rescore-pairs", "1"],
                          cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "plain-script-s0: kept from an earlier run (--resume)" in done.stdout
    assert "qlora-sweep-s0: its earlier run was cut; set aside as qlora-sweep-s0.cut-" in done.stdout
    (cut,) = (out / "seed0").glob("qlora-sweep-s0.cut-*")
    assert cut.is_dir() and not any(cut.iterdir())  # set aside as it was, never deleted
    (summary,) = json.loads((out / "summary.json").read_text())
    plain, ours = summary["plain_script"], summary["qlora_sweep"]
    assert plain["trials"] == ours["trials"] == 2 and plain["validation_examples"] == 4
    assert plain["best"] == max(v for _, v in plain["points"]) and plain["gpu_hours"] == pytest.approx(
        plain["wall_s"] / 3600)
    for arm in (plain, ours):
        assert 0 <= arm["test_rougeL"] <= 1 and arm["best_hyperparameters"]["lora_alpha_ratio"] in (1, 2)
    # by hand's best adapter scored on validation again, by qlora-sweep's evaluator
    assert 0 <= plain["best_rescored"] <= 1 and "best_rescored" not in ours
    shown = ours["best_hyperparameters"]  # best shows the alpha the ratio gave the trial
    assert shown["lora_alpha"] == shown["lora_alpha_ratio"] * shown["lora_r"]
    zero = summary["zero_shot"]
    assert zero["test"]["examples"] == 5 and zero["validation"]["examples"] == 4
    assert "sooner_than_plain" in summary
    shared = summary["shared_best"]  # the lower best, reached by both arms
    assert shared["rougeL"] == min(plain["best"], ours["best"]) and shared["sooner"] == pytest.approx(
        shared["plain_script_s"] / shared["qlora_sweep_s"])
    # both arms proposed the same 2 trials (one seed) and report each rung's mean training loss
    paired = summary["same_hyperparameters"]["by_rung"]["1"]
    assert paired["pairs"] == 2 and paired["train_loss"]["compared"] == 2 and paired["rougeL"]["compared"] == 2
    # and score rung 1 on the same 2 of the 4 dialogues (evaluation.rung_examples [2, 4]), the last on all
    assert paired["rouge_examples"] == {"plain_script": [2], "qlora_sweep": [2]}
    # the pairs' kept adapters, both arms', scored again on the whole validation set by one evaluator
    # (the tiny model's summaries score 0, so only where and how much is checked here)
    rescored = summary["same_hyperparameters"]["rescored"]
    assert rescored["pairs"] == 1 and rescored["rescored"]["compared"] == 1  # --rescore-pairs 1 of the 2
    for pair in rescored["pairs_rescored"]:
        for side in ("plain_script", "qlora_sweep"):
            again = pair[side]
            assert again["rescored_examples"] == again["in_run_examples"] == 4 and 0 <= again["rescored"] <= 1
            assert (out / "seed0" / again["checkpoint"]).is_dir() and f"checkpoint_00000{pair['rung'] - 1}" in again[
                "checkpoint"]
    timing = ours["rung_times"]
    assert timing["cold_first_rungs"] == 1 and timing["warm_first_rungs"] == 1  # one worker ran both trials
    # the kept worker had the trial's imports already: none of its start went to them. (Its whole start
    # against the fresh one's is a race under load: 8.7 against 5.5 s once on CI's machine.)
    kept, fresh = timing["parts"]["first_warm"], timing["parts"]["first_cold"]
    assert kept["startup_imports_s"] < 0.5 < fresh["startup_imports_s"], (kept, fresh)
    # counted from when the driver's Tuner began, a fresh worker's first rung holds the rung itself and
    # the wait for its worker (whole seconds: Tune's timestamps)
    assert timing["first_rung_cold_since_start_s"] >= timing["first_rung_cold_s"] - 1
    # and from the arm's launch, as a user waits: Ray's start and the driver's preparation before the Tuner too
    assert 0 < timing["tuner_after_launch_s"] < timing["first_rung_cold_since_launch_s"]
    assert timing["first_rung_cold_since_launch_s"] == pytest.approx(
        timing["first_rung_cold_since_start_s"] + timing["tuner_after_launch_s"], abs=0.01)
    for group, parts in timing["parts"].items():  # each kind of rung, split into what it was made of
        assert 0 < parts["train_s"] + parts["eval_s"] + parts.get("startup_s", 0) <= parts["rung_s"], (group, parts)
        assert 0 < parts["step_s_median"] and 0 <= parts["train_s_beyond_median"] < parts["train_s"], (group, parts)
        assert 0 < parts["step_s_first"] < parts["train_s"] and 0 < parts["rouge_s"] < parts["eval_s"], (group, parts)
    for group in ("first_cold", "first_warm"):  # one trial each: its start's parts add up to its start
        parts = timing["parts"][group]
        assert sum(parts[part] for part in ("startup_imports_s", "startup_data_s", "startup_model_s",
                                            "startup_trainer_s")) == pytest.approx(parts["startup_s"], abs=0.01)
    assert (out / "sweep_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    again = subprocess.run([sys.executable, "benchmarks/sweep_benchmark.py", str(config), "--out", str(out),
                            "--analyze-only", "--gpus", "1"], cwd=ROOT, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads((out / "summary.json").read_text()) == [summary]

    # A second seed borrows the seed-independent zero-shot scores.
    scores = json.loads((out / "seed0" / "test_scores.json").read_text())
    # each searching arm's score records the search section it ran with: here the same, so they were compared
    assert scores["plain_script"]["search"] == scores["qlora_sweep"]["search"]
    assert scores["qlora_sweep"]["search"]["lora_alpha_ratio"] == {"choice": [1, 2]}
    assert "search_spaces_differ" not in summary
    second = subprocess.run([sys.executable, "benchmarks/sweep_benchmark.py", str(config), "--seeds", "1", "--out",
                             str(out), "--arms", "zero_shot", "--gpus", "1"], cwd=ROOT, capture_output=True, text=True)
    assert second.returncode == 0 and "zero_shot: taken from seed0" in second.stdout, second.stderr[-3000:]
    assert (out / "seed1" / "zero_shot.json").read_text() == (out / "seed0" / "zero_shot.json").read_text()
    # the summary of a run for seed 1 alone still holds seed 0's arms, as the resumed seed 0 left them
    merged = json.loads((out / "summary.json").read_text())
    assert [s["seed"] for s in merged] == [0, 1] and merged[0]["qlora_sweep"]["test_rougeL"] == scores["qlora_sweep"][
        "rougeL"] and "plain_script" not in merged[1]


def test_resume_on_a_finished_sweep_says_so_starts_no_ray_and_writes_nothing(sweep, tmp_path):
    import os
    import subprocess
    import sys

    from tests.helpers import ROOT

    experiment, _ = sweep
    copy = shutil.copytree(experiment, tmp_path / "finished")
    before = {p: p.read_bytes() for p in copy.rglob("*") if p.is_file()}
    ray_temp = tmp_path / "ray"  # where a Ray started by the resume would keep its session
    done = subprocess.run([sys.executable, "-m", "search", "resume", str(copy)], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, "RAY_TMPDIR": str(ray_temp)}, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    first = done.stdout.splitlines()[0]
    assert first.startswith(f"experiment {copy} has finished ({NUM_TRIALS} trials: ") and first.endswith(
        "); nothing to resume")
    assert "best trial:" in done.stdout and "by eval_loss (min)" in done.stdout
    assert {p: p.read_bytes() for p in copy.rglob("*") if p.is_file()} == before
    assert not ray_temp.exists()


def test_trials_after_the_first_start_in_kept_workers_and_train_exactly_as_in_fresh_processes(sweep, tmp_path):
    """reuse_workers (the default): two workers run the six trials; a trial in a kept worker skips
    the imports and loads, and reports the same losses as the same trial in its own fresh process."""
    import yaml

    experiment, done = sweep
    assert "6 trials, 2 at a time (search.max_concurrent_trials)" in done.stdout
    first_rungs = [r for d in trial_dirs(experiment) for r in _rows(d) if r["training_iteration"] == 1]
    cold = [r for r in first_rungs if not r["warm_start"]]
    warm = [r for r in first_rungs if r["warm_start"]]
    assert len(first_rungs) == NUM_TRIALS and len(warm) >= NUM_TRIALS - 3, [r["pid"] for r in first_rungs]
    assert {r["pid"] for r in warm} <= {r["pid"] for r in cold}  # run by the workers the first trials started
    assert max(r["startup_s"] for r in warm) < min(r["startup_s"] for r in cold)
    # the start in its parts, which add up to it: a kept worker skips the imports (the tiny model's load
    # is too short beside putting LoRA on to tell apart, 0.4-1.1 s either way on a loaded 2-core machine)
    parts = ("startup_imports_s", "startup_data_s", "startup_model_s", "startup_trainer_s")
    within_data = ("startup_data_tokenizer_s", "startup_data_dialogues_s", "startup_data_tokenized_s")
    within_model = ("startup_model_base_s", "startup_model_prepared_s", "startup_model_lora_s")
    for row in first_rungs:
        assert all(row[part] >= 0 for part in parts + within_data + within_model)
        assert sum(row[part] for part in parts) == pytest.approx(row["startup_s"], abs=0.01)
        assert 0 < sum(row[part] for part in within_data) <= row["startup_data_s"]  # the prompts are the rest
        assert sum(row[part] for part in within_model) == pytest.approx(row["startup_model_s"], abs=0.01)
    assert max(r["startup_imports_s"] for r in warm) < 0.5 < min(r["startup_imports_s"] for r in cold)
    for rows in (_rows(d) for d in trial_dirs(experiment)):  # a rung's wall time, in parts
        ends = [r["step"] for r in rows]
        for row, steps in zip(rows, [end - begun for begun, end in zip([0] + ends, ends)]):
            start = row["startup_s"] if row["training_iteration"] == 1 else 0
            assert row["train_s"] > 0 and row["eval_s"] > 0 and start + row["train_s"] + row["eval_s"] <= row["rung_s"]
            assert row["eval_loss_s"] > 0 and row["rouge_s"] > 0
            assert row["eval_loss_s"] + row["rouge_s"] == pytest.approx(row["eval_s"])
            assert 0 < row["step_s_first"] <= row["train_s"]
            # its steps' pace: those up to the median took at most the median each, the rest the time beyond it more
            assert 0 <= row["train_s_beyond_median"] < row["train_s"]
            assert row["train_s"] - row["train_s_beyond_median"] <= steps * row["step_s_median"] + 1e-6

    # A trial that ran warm in the kept sweep (the one with the most rungs), again in a fresh process:
    # a sweep of one trial whose every searched value is a choice of that one (each fresh trial costs
    # CI a process importing the libraries)
    warm_trial = max((d for d in trial_dirs(experiment) if _rows(d)[0]["warm_start"]), key=lambda d: len(_rows(d)))
    values = json.loads((warm_trial / "params.json").read_text())
    config = yaml.safe_load((experiment / "qlora_sweep.yaml").read_text())
    config.update(name="fresh", storage=str(tmp_path))
    config["resources"]["reuse_workers"] = False
    config["search"].update({name: {"choice": [value]} for name, value in values.items()}, num_trials=1)
    fresh = run_cli("run", write_config(tmp_path / "fresh.yaml", config))
    assert fresh.returncode == 0, fresh.stderr[-3000:]

    def losses(folder):
        rows = [r for d in trial_dirs(folder) for r in _rows(d)]
        return rows, {(json.dumps(r["config"], sort_keys=True), r["training_iteration"]): (r["train_loss"], r["eval_loss"])
                      for r in rows}

    fresh_rows, fresh_losses = losses(tmp_path / "fresh")
    kept_rows, kept_losses = losses(experiment)
    assert fresh_rows and not any(r["warm_start"] for r in fresh_rows)
    common = kept_losses.keys() & fresh_losses.keys()  # ASHA may have stopped the kept one sooner
    assert {config for config, _ in common} == {json.dumps(_rows(warm_trial)[0]["config"], sort_keys=True)}
    assert len(common) == len(_rows(warm_trial))  # every rung it ran warm, run fresh
    for key in common:
        assert kept_losses[key] == pytest.approx(fresh_losses[key], rel=1e-5), key


def _rows(trial_dir):
    return [json.loads(line) for line in (trial_dir / "result.json").read_text().splitlines() if line.strip()]
