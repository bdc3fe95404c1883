"""benchmarks/race_across_runs.py: issue 11's race to by hand's best, every sweep run against every by-hand run."""

import json
import sys

import pytest

from tests.helpers import ROOT

pytestmark = pytest.mark.unit


def _arm(folder, scores, examples=500):
    """An arm's experiment folder whose one trial scored `scores` on `examples` validation dialogues, each (seconds
    since the arm's start, ROUGE-L); the arm starts at t=1000."""
    (folder / "trial_0").mkdir(parents=True)
    rows = [{"config": {"lora_r": 64}, "training_iteration": i + 1, "rougeL": rouge, "rouge_examples": examples,
             "trial_id": "t0", "timestamp": 1000 + seconds, "time_total_s": seconds}
            for i, (seconds, rouge) in enumerate(scores)]
    (folder / "trial_0" / "result.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def _main():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from race_across_runs import main
    return main


def test_every_sweep_run_races_every_by_hand_run_and_a_run_that_never_reaches_counts_below_every_figure(
        tmp_path, capsys):
    main = _main()
    # by hand: a high best late and a low best earlier; the sweep: one fast run that reaches both, one that
    # reaches only the low one (2x its time: short of 3x), one that reaches neither
    plain = [_arm(tmp_path / "p1", [(300, 0.330), (600, 0.346)]), _arm(tmp_path / "p2", [(400, 0.338)])]
    ours = [_arm(tmp_path / "o1" / "qlora-sweep-s1", [(50, 0.340), (100, 0.347)]),
            _arm(tmp_path / "o2" / "qlora-sweep-s1", [(200, 0.339)]),
            _arm(tmp_path / "o3" / "qlora-sweep-s1", [(90, 0.335)])]
    # the test scores sweep_benchmark.py writes beside a run: the first two runs' were scored, the third's not
    for run, test in (("o1", 0.332), ("o2", 0.3295)):
        (tmp_path / run / "test_scores.json").write_text(json.dumps(
            {"recipe": {"rougeL": 0.30}, "qlora_sweep": {"rougeL": test}, "plain_script": {"rougeL": 0.33}}))
    out = tmp_path / "race.json"
    assert main(["--ours", *map(str, ours), "--plain", *map(str, plain), "--out", str(out)]) == 0
    result = json.loads(out.read_text())

    high, low = result["plain"]
    assert (high["best"], high["time_to_best_s"]) == (0.346, 600)
    assert high["sooner_than_plain"] == [pytest.approx(6.0), None, None]
    assert (high["reached"], high["at_target"]) == (1, 1)
    assert low["sooner_than_plain"] == [pytest.approx(8.0), pytest.approx(2.0), None]
    assert (low["reached"], low["at_target"]) == (2, 1)
    assert (result["pairs"], result["reached"], result["at_target"]) == (6, 3, 2)
    # six pairs sorted: never x3, 2.0, 6.0, 8.0; the lower middle is a "never"
    assert result["median_sooner_than_plain"] is None
    assert [o["best"] for o in result["ours"]] == [0.347, 0.339, 0.335]
    # the test target, in ROUGE-L points over the recipe: +3.2 and +2.95; the run without scores counts in neither
    assert [o["test_over_recipe"] for o in result["ours"]] == [pytest.approx(3.2), pytest.approx(2.95), None]
    assert result["test_over_recipe"] == {"target": 3.0, "runs": 2, "mean": pytest.approx(3.075), "at_target": 1}
    printed = capsys.readouterr().out
    assert "best 0.3460 at 600 s; reached in 1 of 3 runs, 3x sooner or more in 1 (6.00x, never, never)" in printed
    assert "all 6 pairs: 2 at 3x or more, 3 reached; median never" in printed
    assert "test over the recipe: mean +3.08 points over 2 runs, 1 at +3 or more" in printed

    # at a target of 2 the second run's 2.0x counts; with the run that never reached left out, the median is a figure
    assert main(["--ours", str(ours[0]), str(ours[1]), "--plain", *map(str, plain), "--target", "2",
                 "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert (result["pairs"], result["at_target"]) == (4, 3)
    assert result["median_sooner_than_plain"] == pytest.approx(2.0)  # never, 2.0, 6.0, 8.0: the lower middle


@pytest.mark.parametrize("args,message", [
    (["--target", "0"], "--target 0.0: must be above 0"),
    (["--plain", "{empty}"], "no trial results there"),
    # a by-hand arm cut after rung 1, scored on 100 dialogues where the other run's last rung scored 500
    (["--plain", "{cut}"], "{cut}: its best rung scored 100 validation dialogues, other runs 500: a run cut"),
    (["--plain", "{diverged}"], "no rung scored ROUGE-L on its validation dialogues"),
])
def test_bad_arguments_are_refused_in_one_line_with_exit_2_and_nothing_written(tmp_path, capsys, args, message):
    main = _main()
    run = _arm(tmp_path / "run", [(10, 0.3)])
    (tmp_path / "empty").mkdir()
    folders = {"empty": tmp_path / "empty", "cut": _arm(tmp_path / "cut", [(10, 0.3)], examples=100),
               "diverged": _arm(tmp_path / "diverged", [(10, 0.0)], examples=0)}
    out = tmp_path / "race.json"
    argv = ["--ours", str(run), "--plain", str(run), "--out", str(out)] + [a.format(**folders) for a in args]
    message = message.format(**folders)
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]  # argparse's usage, then the one line of the error
    assert ": error: " in last and message in last, err
    assert not out.exists()
