"""benchmarks/rung_times.py: two runs of one arm, trial by trial, by rung."""

import json
import sys

import pytest

from tests.helpers import ROOT

pytestmark = pytest.mark.unit


def _run(folder, trials, parts=None):
    """An arm's folder of Tune trials: each (values, [(seconds, tokens/s) per rung]); parts: each trial's
    rung-1 fields beside them (a qlora-sweep trial's startup, train and eval seconds, warm_start)."""
    for i, (values, rungs) in enumerate(trials):
        trial = folder / f"trainable_{i}"
        trial.mkdir(parents=True)
        (trial / "params.json").write_text(json.dumps(values))
        (trial / "result.json").write_text("".join(
            json.dumps({"config": values, "training_iteration": rung, "time_this_iter_s": seconds,
                        "tokens_per_s": speed, **(parts[i] if parts and rung == 1 else {})}) + "\n"
            for rung, (seconds, speed) in enumerate(rungs, start=1)))
    return folder


def _main():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from rung_times import main
    return main


def test_trials_pair_up_by_their_values_and_each_rung_gives_the_median_ratio_of_the_pairs_that_reached_it(
        tmp_path, capsys):
    main = _main()
    x, y, z = ({"learning_rate": lr, "lora_r": 32, "max_length": 512} for lr in (1e-4, 2e-4, 3e-4))
    # the first run: x and y slower at rung 1, x slower at rung 2; z ran only in the first run (no pair)
    first = _run(tmp_path / "first", [(x, [(120, 800), (60, 900)]), (y, [(110, 900)]), (z, [(50, 2000)])])
    later = _run(tmp_path / "later", [(y, [(100, 1000)]), (x, [(100, 1000), (50, 1000)])])
    assert main([str(first), str(later), "--json", str(tmp_path / "c.json")]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "rung 1: time 1.15x (1.10-1.20), tokens/s 0.85x (0.80-0.90), 2 trials",
        "rung 2: time 1.20x (1.20-1.20), tokens/s 0.90x (0.90-0.90), 1 trials",
    ]
    assert json.loads((tmp_path / "c.json").read_text())["pairs"] == 2


def test_a_folder_without_trials_or_two_runs_with_no_values_in_common_get_one_line_and_exit_2(tmp_path, capsys):
    main = _main()
    run = _run(tmp_path / "run", [({"learning_rate": 1e-4}, [(10, 100)])])
    other = _run(tmp_path / "other", [({"learning_rate": 2e-4}, [(10, 100)])])
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty"), str(run)]) == 2
    assert capsys.readouterr().err == f"rung_times: {tmp_path / 'empty'}: no trials (*/params.json) there\n"
    assert main([str(run), str(other), "--json", str(tmp_path / "c.json")]) == 2
    assert capsys.readouterr().err == f"rung_times: the two runs share no trial values: {run}, {other}\n"
    assert not (tmp_path / "c.json").exists()


def _parts(warm_start, startup, first_step, train, imports=10.0):
    return {"warm_start": warm_start, "startup_s": startup, "startup_imports_s": imports, "startup_data_s": 0.5,
            "startup_model_s": 1.5, "train_s": train, "step_s_first": first_step, "step_s_median": 0.4,
            "eval_s": 10.0}


def test_rung_one_parts_say_where_a_first_run_spent_its_extra_time_apart_for_fresh_and_kept_workers(
        tmp_path, capsys):
    main = _main()
    values = [{"learning_rate": lr, "lora_r": 32, "max_length": 512} for lr in (1e-4, 2e-4, 3e-4)]
    # the first run's fresh workers pay 2.5 and 1.5 s more in their first step, one of them 1 s more in imports;
    # the third trial started in a kept worker in the first run and a fresh one in the later: no pair of either
    first = _run(tmp_path / "first", [(v, [(seconds, 900)]) for v, seconds in zip(values, (45, 43, 41))],
                 [_parts(False, 14, 3.0, 11.5, imports=11), _parts(False, 14, 2.0, 10.5), _parts(True, 1, 0.5, 8)])
    later = _run(tmp_path / "later", [(v, [(40, 900)]) for v in values],
                 [_parts(False, 13, 0.5, 9), _parts(False, 14, 0.5, 9), _parts(False, 13, 0.5, 9)])
    assert main([str(first), str(later), "--json", str(tmp_path / "c.json")]) == 0
    assert capsys.readouterr().out.splitlines()[1:] == [
        "rung 1's parts, 2 trials in fresh workers, first minus later (median s): whole rung +4.00, startup +0.50, "
        "imports +0.50, data +0.00, model +0.00, train +2.00, first step +2.00, median step +0.00, eval +0.00"]
    parts = json.loads((tmp_path / "c.json").read_text())["rung1_parts"]
    assert list(parts) == ["fresh"] and parts["fresh"]["first_minus_later_s"]["step_s_first"] == 2.0
