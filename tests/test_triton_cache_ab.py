"""benchmarks/triton_cache_ab.py: fresh processes by turns with an empty and a filled Triton cache; its summary
and its one-line errors (its processes run first_rung.py on a GPU: the sweep chain's part triton-cache)."""

import json
import sys

import pytest

from tests.helpers import ROOT

pytestmark = pytest.mark.unit


def _script():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import triton_cache_ab
    return triton_cache_ab


def _first_rung_json(path, step_seconds, compiled):
    """As first_rung.py writes it: one trial, each step's seconds and the Triton files it compiled."""
    steps = [{"step": i + 1, "s": s, "triton_compiled": c} for i, (s, c) in enumerate(zip(step_seconds, compiled))]
    path.write_text(json.dumps({"trials": [{"steps": steps}]}))


def test_the_processes_run_fill_first_then_empty_and_full_by_turns():
    assert _script().process_names(2) == ["fill", "empty-1", "full-1", "empty-2", "full-2"]


def test_the_summary_gives_each_process_and_each_side_s_median_leaving_the_untimed_fill_out(tmp_path):
    curve = _script()
    _first_rung_json(tmp_path / "fill.json", [9.0, 0.4, 0.5], [71, 8, 0])
    _first_rung_json(tmp_path / "empty-1.json", [4.0, 0.4, 0.6], [71, 8, 0])
    _first_rung_json(tmp_path / "full-1.json", [1.5, 0.4, 0.4], [0, 0, 0])
    _first_rung_json(tmp_path / "empty-2.json", [3.0, 0.5, 0.5], [70, 8, 1])
    _first_rung_json(tmp_path / "full-2.json", [1.0, 0.3, 0.5], [0, 0, 0])
    result = curve.summarize(tmp_path, 2)
    assert result["processes"]["empty-2"] == {"first_step_s": 3.0, "later_step_median_s": 0.5,
                                              "first_step_triton_compiled": 70, "triton_compiled": 79}
    assert result["sides"] == {
        "empty": {"first_step_s": 3.5, "later_step_median_s": 0.5, "first_step_triton_compiled": 70.5},
        "full": {"first_step_s": 1.25, "later_step_median_s": 0.4, "first_step_triton_compiled": 0}}


@pytest.mark.parametrize(("change", "message"), [
    ({"--rounds": "0"}, "--rounds must be at least 1, not 0"),
    ({"--model": "MISSING"}, "has no config.json"),
    ({"--data": "MISSING"}, "has no train.jsonl"),
    ({"--set": "training.micro_batch_size"}, "--set training.micro_batch_size: expected KEY=VALUE"),
    ({"--shape": "smollm2-135m"}, "--shape smollm2-135m needs --tokenizer, a tokenizer folder"),
    ({"--shape": "no-such-shape", "--tokenizer": "TINY"},
     "--shape no-such-shape: not one of llama3-8b, llama3.2-1b, smollm2-135m"),
])
def test_bad_arguments_get_one_line_exit_2_and_nothing_written(tiny_model_path, tmp_path, capsys, change, message):
    arguments = {"--model": str(tiny_model_path), "--data": str(ROOT / "trainables" / "samples"),
                 "--out-dir": str(tmp_path / "out"), "--rounds": "1"}
    arguments.update({k: {"MISSING": str(tmp_path / "missing"), "TINY": str(tiny_model_path)}.get(v, v)
                      for k, v in change.items()})
    with pytest.raises(SystemExit) as exit_:
        _script().main([word for pair in arguments.items() for word in pair])
    assert exit_.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and error[0].startswith("triton_cache_ab: ") and message in error[0]
    assert not (tmp_path / "out").exists()


def test_a_process_that_fails_stops_the_run_with_one_line_naming_its_log_and_exit_1(tiny_model_path, tmp_path, capsys):
    """first_rung.py refuses an unknown config key before it imports the trial: the first process fails at once."""
    out = tmp_path / "out"
    code = _script().main(["--model", str(tiny_model_path), "--data", str(ROOT / "trainables" / "samples"),
                           "--out-dir", str(out), "--rounds", "1", "--set", "training.no_such_field=1"])
    assert code == 1
    assert capsys.readouterr().err.strip().splitlines() == [
        f"triton_cache_ab: process fill failed (exit 2): {out / 'fill.log'}"]
    assert "training.no_such_field: unknown key" in (out / "fill.log").read_text()
    assert not (out / "triton_cache_ab.json").exists()
