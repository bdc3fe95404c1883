import json
import os
import shutil
import subprocess
import sys

import pytest

from search.cli import main
from tests.conftest import tiny_sweep_dict, write_config
from tests.helpers import ROOT, run_cli

pytestmark = pytest.mark.unit


def test_validate_summarizes_a_good_config(tiny_model_path, tmp_path, capsys):
    # In this process: `python -m search` as its own process is tested below (--help, the refusals before
    # Ray); a fresh one here cost 7 s of the unit layer's minute on 2 cores for transformers' imports alone
    assert main(["validate", str(write_config(tmp_path / "s.yaml", tiny_sweep_dict(tiny_model_path,
                                                                                    tmp_path / "r")))]) == 0
    out, err = capsys.readouterr()
    assert err == "" and out.startswith("config OK: tiny\n"), out + err
    assert "64 train / 6 validation examples" in out and f"results: {tmp_path / 'r'}" in out
    assert not (tmp_path / "r").exists()  # validating writes nothing


def test_run_with_a_bad_config_exits_2_before_ray_starts_and_writes_nothing(tiny_model_path, tmp_path):
    config = tiny_sweep_dict(tiny_model_path, tmp_path / "results", search={"lora_alpha": {"choice": [0]}})
    ray_temp = tmp_path / "ray"  # where a Ray started by this run would keep its session
    done = subprocess.run([sys.executable, "-m", "search", "run", str(write_config(tmp_path / "s.yaml", config))],
                          capture_output=True, text=True, cwd=ROOT, env={**os.environ, "RAY_TMPDIR": str(ray_temp)})
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"qlora-sweep: error: {tmp_path / 's.yaml'}: search.lora_alpha: values must be > 0, got 0"]
    assert done.stdout == "" and not ray_temp.exists()
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("command", ["run", "validate"])
def test_storage_that_cannot_be_written_is_refused_before_ray_starts(tiny_model_path, tmp_path, command):
    (tmp_path / "a-file").write_text("not a folder")
    config = tiny_sweep_dict(tiny_model_path, tmp_path / "a-file" / "results")
    ray_temp = tmp_path / "ray"
    done = subprocess.run([sys.executable, "-m", "search", command, str(write_config(tmp_path / "s.yaml", config))],
                          capture_output=True, text=True, cwd=ROOT, env={**os.environ, "RAY_TMPDIR": str(ray_temp)})
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"qlora-sweep: error: storage {tmp_path}/a-file/results: cannot be written ({tmp_path}/a-file is not a directory)"]
    assert not ray_temp.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "s.yaml"]


def test_resume_on_a_folder_that_is_not_an_experiment_exits_2_with_one_line(tmp_path):
    done = run_cli("resume", tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"qlora-sweep: error: {tmp_path}: not a qlora-sweep experiment folder (no qlora_sweep.yaml or tuner.pkl)"]


def test_run_refuses_an_experiment_name_that_already_exists(tiny_model_path, tmp_path):
    existing = tmp_path / "results" / "tiny"
    existing.mkdir(parents=True)
    (existing / "keep.txt").write_text("earlier results")
    done = run_cli("run", write_config(tmp_path / "s.yaml", tiny_sweep_dict(tiny_model_path, tmp_path / "results")))
    assert done.returncode == 2
    assert "already exists; continue it with --resume" in done.stderr
    assert [p.name for p in existing.iterdir()] == ["keep.txt"]


def test_a_refused_command_answers_from_the_paths_before_ray_or_a_model_library_loads(tiny_model_path, tmp_path):
    """A taken experiment name, or a folder that holds no experiment, is refused from the paths alone: not after
    the seconds of importing Ray, Tune and the model libraries (a refused `run` took 3.2 s on 2 cores, 0.6 s now)."""
    (tmp_path / "results" / "tiny").mkdir(parents=True)
    (tmp_path / "results" / "tiny" / "keep.txt").write_text("earlier results")
    config = write_config(tmp_path / "s.yaml", tiny_sweep_dict(tiny_model_path, tmp_path / "results"))
    (tmp_path / "dialogues.jsonl").write_text('{"dialogue": "#Person1#: hi"}\n')
    commands = [["run", str(config)], ["resume", str(tmp_path)], ["best", str(tmp_path)], ["report", str(tmp_path)],
                ["export", str(tmp_path), str(tmp_path / "out")],
                ["predict", str(tmp_path), "--input", str(tmp_path / "dialogues.jsonl")]]
    code = ("import json, sys; from search.cli import main; codes = [main(c) for c in json.loads(sys.argv[1])]; "
            "heavy = ('ray', 'torch', 'transformers', 'peft'); "
            "print(json.dumps([codes, sorted(m for m in heavy if m in sys.modules)]))")
    done = subprocess.run([sys.executable, "-c", code, json.dumps(commands)], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    codes, loaded = json.loads(done.stdout.splitlines()[-1])
    assert codes == [2] * len(commands) and loaded == []
    said = done.stderr.strip().splitlines()
    assert len(said) == len(commands) and "already exists; continue it with --resume" in said[0]
    assert "not a qlora-sweep experiment folder" in said[1]
    assert all("no experiment_state-*.json" in line for line in said[2:]), said
    assert not (tmp_path / "out").exists()


def test_best_on_a_folder_that_is_not_an_experiment_exits_2(tmp_path):
    done = run_cli("best", tmp_path)
    assert done.returncode == 2 and "no experiment_state-*.json" in done.stderr


def test_python_dash_m_search_is_the_same_cli():
    done = subprocess.run([sys.executable, "-m", "search", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0
    for command in ("run", "validate", "best", "report", "fetch-model"):
        assert command in done.stdout


def test_a_hub_id_without_a_hub_is_looked_up_in_the_local_cache_only_and_fails_with_one_line(
        tiny_model_path, tmp_path):
    """Without a hub, a hub id loads from the local Hugging Face cache when a snapshot of it is there, and is
    refused in one line when none is, before transformers loads (the refusal took 5.6 s on 2 cores, 0.6 s now)."""
    cache = tmp_path / "hub"  # laid out as huggingface_hub keeps a downloaded model: refs/main names a snapshot
    (cache / "models--some-org--tiny" / "refs").mkdir(parents=True)
    (cache / "models--some-org--tiny" / "refs" / "main").write_text("0" * 40)
    shutil.copytree(tiny_model_path, cache / "models--some-org--tiny" / "snapshots" / ("0" * 40))
    commands = [["validate", str(write_config(tmp_path / f"{name}.yaml", tiny_sweep_dict(
        tiny_model_path, tmp_path / "r", model={"name_or_path": f"{org}/{name}"})))]
        for org, name in (("no-such-org", "no-such-model"), ("some-org", "tiny"))]
    code = ("import json, sys; from search.cli import main; codes = [main(json.loads(sys.argv[1])[0])]; "
            "codes.append('transformers' in sys.modules); codes.append(main(json.loads(sys.argv[1])[1])); print(codes)")
    # A hub that refuses connections at once: the probe finds it unreachable, and the hub client,
    # which would retry for ~50 s, is never asked.
    env = {**{k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}, "HF_ENDPOINT": "https://127.0.0.1",
           "HF_HUB_CACHE": str(cache)}
    done = subprocess.run([sys.executable, "-c", code, json.dumps(commands)], capture_output=True, text=True,
                          cwd=ROOT, env=env)
    assert done.stdout.splitlines()[-1] == "[2, False, 0]", done.stdout[-2000:] + done.stderr[-2000:]
    assert done.stderr.strip().splitlines() == [
        "qlora-sweep: error: model.name_or_path no-such-org/no-such-model: tokenizer cannot be loaded from this hub "
        "id: it is not in the local Hugging Face cache and 127.0.0.1 is unreachable: Connection refused; give a "
        "local folder"]
    assert "config OK: tiny" in done.stdout  # the cached one: its tokenizer loaded, the data checked with it


def test_best_on_a_bucket_uri_says_to_copy_it_first():
    done = run_cli("best", "s3://bucket/experiment")
    assert done.returncode == 2 and "copy the experiment first" in done.stderr
