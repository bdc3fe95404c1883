"""Bad configs and bad data: one line naming the key or file, exit code 2, nothing written."""

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from search.cli import main
from search.config import Choice, Range, SweepConfig, load_config
from search.space import resolve_hyperparameters
from tests.conftest import tiny_sweep_dict, write_config
from trainables.errors import ConfigError

pytestmark = pytest.mark.unit


def _drop(config: dict, dotted: str) -> dict:
    *parents, last = dotted.split(".")
    node = config
    for part in parents:
        node = node[part]
    del node[last]
    return config


BAD_CONFIGS = [
    # (case id, change to a valid config, expected message fragment)
    ("unknown top-level key", {"color": "blue"}, "color: unknown key"),
    ("unknown nested key", {"model": {"quantisation": "nf4"}}, "model.quantisation: unknown key"),
    ("wrong type", {"training": {"micro_batch_size": "four"}}, "training.micro_batch_size: Input should be a valid integer"),
    ("alpha zero", {"search": {"lora_alpha": {"choice": [0, 16]}}}, "search.lora_alpha: values must be > 0, got 0"),
    ("alpha negative fixed", {"search": {"lora_alpha": -8}}, "search.lora_alpha: values must be > 0"),
    ("learning rate zero", {"search": {"learning_rate": {"low": 0.0, "high": 1.0e-3}}}, "search.learning_rate: values must be > 0"),
    ("learning rate negative", {"search": {"learning_rate": -1.0e-4}}, "search.learning_rate: values must be > 0"),
    ("range upside down", {"search": {"lora_r": {"low": 64, "high": 8}}}, "search.lora_r: low (64) must be below high (8)"),
    ("grace beyond last rung", {"scheduler": {"grace_period": 5, "max_rungs": 3}}, "grace_period (5) is beyond the last rung (max_rungs=3)"),
    ("mode against metric", {"scheduler": {"metric": "eval_loss", "mode": "max"}}, "mode 'max' would pick the worst eval_loss"),
    ("unknown metric", {"scheduler": {"metric": "bleu"}}, "scheduler.metric: Input should be"),
    ("fractional gpus above one", {"resources": {"gpus_per_trial": 1.5}}, "above 1 GPU only whole numbers"),
    ("bad experiment name", {"name": "../escape"}, "name: use letters, digits"),
    ("nothing searched", {"search": {"lora_r": 8, "lora_alpha": 16, "learning_rate": 1.0e-4, "max_length": 256}},
     "search: nothing to search"),
    ("bad target modules", {"search": {"target_modules": [1, 2]}}, "search.target_modules: each option must be"),
    ("generation batch a word", {"evaluation": {"batch_size": "many"}}, "evaluation.batch_size: must be auto or a whole number, got 'many'"),
    ("generation batch zero", {"evaluation": {"batch_size": 0}}, "evaluation.batch_size: must be at least 1 or auto, got 0"),
    ("checkpointing a number", {"training": {"gradient_checkpointing": 1}}, "training.gradient_checkpointing: must be auto or true/false, got 1"),
    ("memory budget zero", {"resources": {"gpu_memory_gb": 0}}, "resources.gpu_memory_gb"),
    ("rung examples shrink", {"evaluation": {"rung_examples": [64, 32]}}, "evaluation.rung_examples: counts must not shrink"),
    ("rung examples zero", {"evaluation": {"rung_examples": [0]}}, "evaluation.rung_examples: each count must be at least 1"),
    ("loss examples zero", {"evaluation": {"loss_examples": 0}},
     "evaluation.loss_examples: must be auto, all, first_rung or a whole number of at least 1, got 0"),
    ("loss examples a word", {"evaluation": {"loss_examples": "some"}},
     "evaluation.loss_examples: must be auto, all, first_rung or a whole number of at least 1, got 'some'"),
    ("validation fraction", {"data": {"validation_fraction": 1.5}}, "data.validation_fraction: Input should be less than 1"),
    ("max_length below scaffolding", {"search": {"max_length": {"choice": [16, 256]}}},
     "search.max_length: 16 tokens is not longer than the prompt scaffolding"),
    ("missing model folder", {"model": {"name_or_path": "/nonexistent/model"}}, "model.name_or_path /nonexistent/model does not exist"),
    ("hub id while offline", {"model": {"name_or_path": "no-such-org/no-such-model"}},
     "model.name_or_path no-such-org/no-such-model: tokenizer cannot be loaded from this hub id: it is not in the local Hugging Face cache and HF_HUB_OFFLINE is set"),
    ("missing data file", {"data": {"path": "/nonexistent/data.jsonl"}}, "data.path /nonexistent/data.jsonl does not exist"),
    ("missing field", {"data": {"summary_field": "abstract"}}, "missing field 'abstract'"),
    ("no train split", {"data": {"train_split": "training"}}, "no 'training' split"),
    ("list where a searched value goes", {"search": {"lora_r": [8, 16]}},
     "search.lora_r: got the list [8, 16]: to search among these values, write {choice: [8, 16]}"),
    ("loraplus ratio below one", {"search": {"loraplus_lr_ratio": {"choice": [0.5, 16]}}},
     "search.loraplus_lr_ratio: values must be >= 1 (lora_B's rate over lora_A's; 1 is plain LoRA), got 0.5"),
    ("unknown key near a known one", {"training": {"micro_batch": 4}},
     "training.micro_batch: unknown key; did you mean training.micro_batch_size?"),
]


@pytest.mark.parametrize("case,change,message", BAD_CONFIGS, ids=[c[0] for c in BAD_CONFIGS])
def test_bad_config_fails_with_one_line_naming_the_problem(case, change, message, tiny_model_path, tmp_path, capsys):
    config = tiny_sweep_dict(tiny_model_path, tmp_path / "results", **change)
    path = write_config(tmp_path / "sweep.yaml", config)
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("qlora-sweep: error: "), err
    assert message in err
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("storage,message", [
    ("/etc/hostname", "storage /etc/hostname: cannot be written (/etc/hostname is not a directory)"),
    ("/proc/qlora-sweep-nope", "storage /proc/qlora-sweep-nope: cannot be written ("),
])
def test_storage_that_cannot_be_written_fails_validate_with_one_line(storage, message, tiny_model_path, tmp_path, capsys):
    config = tiny_sweep_dict(tiny_model_path, storage)
    assert main(["validate", str(write_config(tmp_path / "sweep.yaml", config))]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
    assert not Path("/proc/qlora-sweep-nope").exists()


def _jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


BAD_DATA = [
    ("empty file", lambda d: (d / "train.jsonl").write_text(""), "the dataset is empty"),
    ("no rows in csv", lambda d: (d / "train.csv").write_text("dialogue,summary\n"), "the dataset is empty"),
    ("field missing", lambda d: _jsonl(d / "train.jsonl", [{"dialogue": "hi", "abstract": "x"}]), "missing field 'summary'"),
    ("not json", lambda d: (d / "train.jsonl").write_text("{not json\n"), "no readable rows (1 not valid JSON)"),
    ("broken csv", lambda d: (d / "train.csv").write_bytes(b'dialogue,summary\n"unclosed,x\n'), "cannot be read"),
    ("no data files", lambda d: (d / "notes.txt").write_text("x"), "no .jsonl/.json/.csv/.parquet files"),
]


@pytest.mark.parametrize("case,make,message", BAD_DATA, ids=[c[0] for c in BAD_DATA])
def test_bad_data_fails_with_one_line_naming_the_file(case, make, message, tiny_model_path, tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    make(data)
    config = tiny_sweep_dict(tiny_model_path, tmp_path / "results", data={"path": str(data)})
    assert main(["validate", str(write_config(tmp_path / "sweep.yaml", config))]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err


def test_missing_or_unparsable_config_file(tmp_path, capsys):
    assert main(["validate", str(tmp_path / "none.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [unclosed\n")
    assert main(["validate", str(broken)]) == 2
    assert "not valid YAML (line 2)" in capsys.readouterr().err
    no_model = write_config(tmp_path / "no_model.yaml", {"name": "x"})
    assert main(["validate", str(no_model)]) == 2
    assert "model: Field required" in capsys.readouterr().err
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing yet\n")
    assert main(["validate", str(empty)]) == 2
    assert capsys.readouterr().err == (f"qlora-sweep: error: {empty}: the file is empty; a sweep needs at least name "
                                       "and model.name_or_path (configs/quickstart.yaml is one to start from)\n")


def test_a_set_mistake_names_the_set_and_the_nearest_valid_key(tiny_model_path, tmp_path, capsys):
    path = write_config(tmp_path / "sweep.yaml", tiny_sweep_dict(tiny_model_path, tmp_path / "results"))
    assert main(["validate", str(path), "--set", "trainer.learning_rate=1e-4"]) == 2
    assert capsys.readouterr().err == ("qlora-sweep: error: --set trainer.learning_rate=1e-4: trainer.learning_rate: "
                                       "unknown key; did you mean search.learning_rate?\n")
    assert main(["validate", str(path), "--set", "training.micro_batch_size=-1"]) == 2
    assert capsys.readouterr().err.startswith("qlora-sweep: error: --set training.micro_batch_size=-1: "
                                              "training.micro_batch_size: Input should be greater than or equal to 1")
    assert not (tmp_path / "results").exists()


def test_set_overrides_any_field_and_parses_values_as_yaml(tiny_model_path, tmp_path):
    path = write_config(tmp_path / "sweep.yaml", tiny_sweep_dict(tiny_model_path, tmp_path))
    sweep = load_config(path, ["training.micro_batch_size=8", "search.lora_r={choice: [4, 64]}", "name=other",
                                "data.max_train_examples=null"])
    assert sweep.training.micro_batch_size == 8
    assert sweep.search.lora_r == Choice(choice=[4, 64])
    assert sweep.name == "other" and sweep.data.max_train_examples is None
    with pytest.raises(ValueError, match="expected section.key=value"):
        load_config(path, ["training.micro_batch_size"])
    with pytest.raises(ValueError, match="training.micro_batch: unknown key"):
        load_config(path, ["training.micro_batch=8"])


def test_config_is_frozen_and_paths_become_absolute(tiny_model_path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = tiny_sweep_dict(tiny_model_path, tmp_path, data={"path": "./data"})
    sweep = SweepConfig.model_validate(config)
    assert sweep.data.path == str(tmp_path / "data")
    with pytest.raises(ValidationError, match="Instance is frozen"):
        sweep.name = "changed"


def test_trial_hyperparameters_merge_fixed_and_searched_values(tiny_model_path, tmp_path):
    config = tiny_sweep_dict(tiny_model_path, tmp_path, search={"lora_dropout": 0.1,
                                                               "target_modules": {"choice": ["all-linear", ["q_proj", "v_proj"]]}})
    sweep = SweepConfig.model_validate(config)
    assert set(sweep.search.searched) == {"lora_r", "lora_alpha", "learning_rate", "max_length", "target_modules"}
    hp = resolve_hyperparameters(sweep.search, {"lora_r": 4, "lora_alpha": 8, "learning_rate": 1e-3,
                                                      "max_length": 192, "target_modules": "q_proj,v_proj"})
    assert hp.lora_dropout == 0.1 and hp.target_modules == ["q_proj", "v_proj"]
    assert isinstance(sweep.search.learning_rate, Range)


def test_shipped_configs_are_valid():
    for path in sorted(Path(__file__).resolve().parent.parent.joinpath("configs").glob("*.yaml")):
        load_config(path)


def test_every_shipped_config_searches_lora_alpha_as_a_ratio_of_the_rank_as_the_default_space_does():
    # an alpha searched on its own over several ranks ties the update's scale to the rank drawn: on
    # 2026-12-01 smollm2_dialogsum_gpu.yaml's best alpha sat on the top of {16, 32, 64} (issue 11)
    for path in sorted(Path(__file__).resolve().parent.parent.joinpath("configs").glob("*.yaml")):
        search = load_config(path).search
        assert search.lora_alpha is None, path.name
        assert isinstance(search.lora_alpha_ratio, Choice) and len(search.lora_alpha_ratio.choice) >= 3, path.name


def test_lora_alpha_may_be_fractional_but_rank_must_be_whole(tiny_model_path, tmp_path):
    sweep = SweepConfig.model_validate(tiny_sweep_dict(tiny_model_path, tmp_path, search={"lora_alpha": {"choice": [8.5, 16]}}))
    assert sweep.search.lora_alpha == Choice(choice=[8.5, 16])
    with pytest.raises(ConfigError, match="lora_r: values must be whole numbers, got 4.5"):
        load_config(write_config(tmp_path / "s.yaml", tiny_sweep_dict(tiny_model_path, tmp_path, search={"lora_r": {"choice": [4.5]}})))


def test_torchs_fill_of_new_memory_asked_without_deterministic_kernels_is_refused_in_one_line(
        tiny_model_path, tmp_path, capsys):
    # torch reads the fill switch only while its deterministic kernels are on: alone it would do nothing
    config = write_config(tmp_path / "c.yaml", tiny_sweep_dict(
        tiny_model_path, tmp_path / "r", training={"fill_uninitialized_memory": True}))
    assert main(["validate", str(config)]) == 2
    err = capsys.readouterr().err.strip()
    assert "fill_uninitialized_memory: true does nothing without deterministic: true" in err and "\n" not in err
    both = load_config(config, ["training.deterministic=true"]).training
    assert both.deterministic and both.fill_uninitialized_memory
    assert load_config(config, ["training.fill_uninitialized_memory=false"]).training.fill_uninitialized_memory is False


def test_yaml_is_loaded_safely(tmp_path, capsys):
    target = tmp_path / "pwned"
    config = tmp_path / "evil.yaml"
    config.write_text(f'name: !!python/object/apply:os.system ["touch {target}"]\n')
    assert main(["validate", str(config)]) == 2
    assert "not valid YAML" in capsys.readouterr().err and not target.exists()


def test_remote_code_stays_off_unless_the_config_turns_it_on(tiny_model_path, tmp_path):
    assert SweepConfig.model_validate(tiny_sweep_dict(tiny_model_path, tmp_path)).model.trust_remote_code is False


def test_rung_examples_grow_to_the_whole_validation_set_at_the_last_rung():
    from trainables.config import EvaluationConfig

    auto = EvaluationConfig()
    assert [auto.examples_at(rung, 3, 500) for rung in (1, 2, 3)] == [125, 250, 500]
    assert [auto.examples_at(rung, 4, 100) for rung in (1, 2, 3, 4)] == [64, 64, 64, 100]
    listed = EvaluationConfig(rung_examples=[10, 20])
    assert [listed.examples_at(rung, 4, 100) for rung in (1, 2, 3, 4)] == [10, 20, 100, 100]
    assert [listed.examples_at(rung, 2, 15) for rung in (1, 2)] == [10, 15]  # the last rung scores all
    assert EvaluationConfig(rung_examples="all").examples_at(1, 4, 100) == 100


def test_every_trial_scores_the_same_dialogues_at_a_rung_and_a_later_rung_includes_an_earlier_ones():
    """EvaluationConfig.dialogues_at, which qlora-sweep's trial and the sweep benchmark's by-hand arm
    both score by: a prefix of one shuffle by data.seed, of examples_at's size."""
    from trainables.config import EvaluationConfig

    listed = EvaluationConfig(rung_examples=[3, 6])
    first, second, last = (listed.dialogues_at(rung, 3, 20, seed=7) for rung in (1, 2, 3))
    assert (len(first), len(second), sorted(last)) == (3, 6, list(range(20)))
    assert second[:3] == first and last[:6] == second
    assert first != [0, 1, 2]  # shuffled, not the split's head
    assert listed.dialogues_at(1, 3, 20, seed=7) == first  # the same for every trial of the seed
    assert listed.dialogues_at(1, 3, 20, seed=8) != first


def test_the_validation_loss_covers_rung_1s_rouge_dialogues_where_rouge_ranks_and_all_where_the_loss_does():
    """evaluation.loss_examples, decided by the driver from scheduler.metric: a subset is a prefix of the
    shuffle ROUGE draws from, the same at every rung, in the split's order; None means the whole split."""
    from trainables.config import EvaluationConfig

    auto = EvaluationConfig(rung_examples=[3, 6])
    assert auto.deciding_loss_examples("rougeL").loss_examples == "first_rung"
    assert auto.deciding_loss_examples("eval_loss").loss_examples == "all"
    assert EvaluationConfig(loss_examples=5).deciding_loss_examples("eval_loss").loss_examples == 5  # as asked
    first_rung = auto.deciding_loss_examples("rougeL").loss_dialogues(3, 20, seed=7)
    assert first_rung == sorted(auto.dialogues_at(1, 3, 20, seed=7))  # rung 1's ROUGE dialogues, 3 of 20
    assert EvaluationConfig(loss_examples=5).loss_dialogues(3, 20, seed=7)[:3] != [0, 1, 2]
    assert set(first_rung) < set(EvaluationConfig(loss_examples=5).loss_dialogues(3, 20, seed=7))  # a prefix
    assert EvaluationConfig(loss_examples="all").loss_dialogues(3, 20, seed=7) is None
    assert EvaluationConfig(loss_examples=20).loss_dialogues(3, 20, seed=7) is None  # as many as there are: all
    assert EvaluationConfig(loss_examples="first_rung").loss_dialogues(1, 20, seed=7) is None  # one rung scores all
    with pytest.raises(ValueError, match="decided by the driver"):
        EvaluationConfig().loss_dialogues(3, 20, seed=7)
