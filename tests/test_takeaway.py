"""What a user takes away from a finished sweep, through the CLI: experiments by name, `export`
(adapter or merged model, with a model card), `predict` on a file, and `report --plots`."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import run_cli

pytestmark = pytest.mark.sweep


def storage_and_name(sweep):
    experiment, _ = sweep
    return str(experiment.parent), experiment.name


def test_best_and_report_take_a_name_in_the_given_storage(sweep):
    storage, name = storage_and_name(sweep)
    by_name = run_cli("best", name, "--storage", storage, "--json")
    by_path = run_cli("best", str(sweep[0]), "--json")
    assert by_name.returncode == 0, by_name.stderr
    assert json.loads(by_name.stdout) == json.loads(by_path.stdout)
    assert run_cli("report", name, "--storage", storage).returncode == 0


def test_an_unknown_name_gets_one_line_listing_the_names_there(sweep):
    storage, name = storage_and_name(sweep)
    done = run_cli("report", "no-such-sweep", "--storage", storage)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"qlora-sweep: error: no experiment named 'no-such-sweep' in {storage} (experiments there: {name}); "
        "give its name, its folder, or --storage where it was written"]


def test_export_writes_the_adapter_tokenizer_configs_and_a_model_card_and_with_force_replaces_a_folder(
        sweep, tmp_path):
    storage, name = storage_and_name(sweep)
    out = tmp_path / "exported"  # taken: --force replaces it (the merged exports below write new folders)
    out.mkdir()
    (out / "mine.txt").write_text("replace me")
    done = run_cli("export", name, str(out), "--storage", storage, "--force")
    assert done.returncode == 0, done.stderr
    assert not (out / "mine.txt").exists()
    best = json.loads(run_cli("best", name, "--storage", storage, "--json").stdout)
    assert f"exported trial {best['trial_id']} (adapter" in done.stdout
    for file in ("adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "qlora_sweep.yaml",
                 "qlora_sweep_trial.json", "README.md"):
        assert (out / file).is_file(), file
    card = (out / "README.md").read_text()
    assert best["trial_id"] in card and "### Instruct: Summarize" in card and "### Output:" in card  # the prompt
    assert "### End" in card and "TEMPLATE = " in card
    assert f"| learning_rate | {best['hyperparameters']['learning_rate']} |" in card
    assert f"qlora-sweep export {name} {out}" in card  # the command that made it
    assert not list(tmp_path.glob(".exported.partial-*"))  # the staging folder is gone

    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    record = json.loads((out / "qlora_sweep_trial.json").read_text())  # the checkpoint's record, in its layout
    saved = json.loads((Path(best["checkpoint"]) / "qlora_sweep_trial.json").read_text())
    assert set(record) == {"trial", "step"} and record["step"] == saved["step"] > 0
    assert record["trial"]["hyperparameters"] == saved["trial"]["hyperparameters"]
    base = AutoModelForCausalLM.from_pretrained(record["trial"]["model"]["name_or_path"])
    PeftModel.from_pretrained(base, str(out))  # the folder is an adapter peft loads


def test_export_refuses_an_existing_folder_with_one_line_and_leaves_it_as_it_was(sweep, tmp_path):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    done = run_cli("export", str(sweep[0]), str(out))
    assert done.returncode == 2
    assert done.stderr.strip() == f"qlora-sweep: error: {out} already exists; choose another folder, or --force to replace it"
    assert [p.name for p in out.iterdir()] == ["mine.txt"]  # --force replaces it: the test above


def test_a_merged_export_loads_without_peft_or_bitsandbytes_and_computes_what_the_adapted_4bit_model_does(
        sweep, tmp_path):
    import torch

    from search.experiment import load_resolved_config
    from search.packing import TrialPlanner
    from trainables.export import load_adapted_model

    experiment = str(sweep[0])
    best = json.loads(run_cli("best", experiment, "--json").stdout)
    merged = {}
    for dtype in ("float32", "bfloat16"):
        out = tmp_path / f"merged-{dtype}"
        done = run_cli("export", experiment, str(out), "--merge", "--dtype", dtype)
        assert done.returncode == 0, done.stderr
        assert (out / "adapter" / "adapter_config.json").is_file() and not (out / "adapter_config.json").exists()
        assert "quantization_config" not in json.loads((out / "config.json").read_text())
        merged[dtype] = out

    # In a process where peft and bitsandbytes cannot be imported at all.
    probe = ("import sys, torch; sys.modules['peft'] = None; sys.modules['bitsandbytes'] = None\n"
             "from transformers import AutoModelForCausalLM\n"
             f"m = AutoModelForCausalLM.from_pretrained({str(merged['bfloat16'])!r}); print(m.dtype)")
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    assert loaded.stdout.strip() == "torch.bfloat16"

    from transformers import AutoModelForCausalLM

    trial = TrialPlanner.alone_on_this_machine(load_resolved_config(experiment)).trial_config(best["hyperparameters"])
    adapted = load_adapted_model(trial, best["checkpoint"]).eval()
    ids = torch.tensor([[1, 5, 9, 42, 7, 3, 11, 2]])
    with torch.no_grad():
        expected = adapted(input_ids=ids).logits.float()
        exact = AutoModelForCausalLM.from_pretrained(merged["float32"])(input_ids=ids).logits.float()
        rounded = AutoModelForCausalLM.from_pretrained(merged["bfloat16"])(input_ids=ids).logits.float()
    assert torch.allclose(exact, expected, atol=1e-4, rtol=1e-4)  # float32: equal but for float rounding
    scale = expected.abs().max()
    assert (rounded - expected).abs().max() <= 0.03 * scale  # bfloat16 weights: within bf16 rounding


def test_predict_summarizes_every_row_with_the_sweeps_prompt_and_cut(sweep, tmp_path):
    import pandas

    rows = [{"id": "a", "dialogue": "#Person1#: Hello.\n#Person2#: Hi there."},
            {"id": "b", "dialogue": ""},  # no dialogue: the row stays, unsummarized
            {"id": "c", "dialogue": "#Person1#: Lunch?\n#Person2#: Yes, at noon."}]
    source = tmp_path / "new.csv"
    pandas.DataFrame(rows).to_csv(source, index=False)
    out = tmp_path / "predicted.jsonl"
    done = run_cli("predict", str(sweep[0]), "--input", str(source), "--output", str(out))
    assert done.returncode == 0, done.stderr
    assert "summarizing" in done.stderr and "2 of 3 rows summarized" in done.stderr  # the bar, then the count
    written = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in written] == ["a", "b", "c"]
    assert written[1]["predicted_summary"] is None
    assert all(isinstance(written[i]["predicted_summary"], str) for i in (0, 2))
    assert all("### End" not in (r["predicted_summary"] or "") for r in written)

    to_stdout = run_cli("predict", str(sweep[0]), "--input", str(source))
    assert [json.loads(line)["id"] for line in to_stdout.stdout.splitlines()] == ["a", "b", "c"]
    assert [json.loads(line)["predicted_summary"] for line in to_stdout.stdout.splitlines()] == \
        [r["predicted_summary"] for r in written]  # greedy: the same summaries again


def test_predict_on_a_file_without_a_dialogue_field_names_the_fields_and_writes_nothing(sweep, tmp_path):
    source = tmp_path / "wrong.jsonl"
    source.write_text('{"text": "hello", "id": 1}\n')
    out = tmp_path / "never.jsonl"
    done = run_cli("predict", str(sweep[0]), "--input", str(source), "--output", str(out))
    assert done.returncode == 2
    assert done.stderr.strip() == f"qlora-sweep: error: --input {source}: no 'dialogue' field (it has: id, text)"
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["wrong.jsonl"]


def test_report_plots_draws_four_pictures_into_the_experiment_folder(sweep):
    experiment = sweep[0]
    done = run_cli("report", str(experiment), "--plots")
    assert done.returncode == 0, done.stderr
    names = ("best_so_far.png", "hyperparameters.png", "rungs.png", "importance.png")
    for name in names:
        path = experiment / "plots" / name
        assert f"plot: {path}" in done.stdout
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
