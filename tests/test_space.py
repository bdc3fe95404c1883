import pytest
from ray import tune

from search.config import SearchConfig
from search.tuner import tune_search_space

pytestmark = pytest.mark.unit


def test_choices_and_ranges_become_tune_domains_and_fixed_values_stay_out():
    search = SearchConfig.model_validate({
        "lora_r": {"choice": [8, 16]},
        "lora_alpha": {"low": 8, "high": 64, "log": True},
        "learning_rate": {"low": 1.0e-5, "high": 1.0e-3, "log": True},
        "max_length": {"low": 256, "high": 512},
        "lora_dropout": {"low": 0.0, "high": 0.2},
        "target_modules": {"choice": ["all-linear", ["q_proj", "v_proj"]]},
    })
    space = tune_search_space(search)
    assert space["lora_r"].categories == [8, 16]
    assert space["target_modules"].categories == ["all-linear", "q_proj,v_proj"]
    assert isinstance(space["learning_rate"], tune.search.sample.Float)
    assert space["learning_rate"].lower == 1.0e-5 and space["learning_rate"].upper == 1.0e-3
    assert isinstance(space["max_length"], tune.search.sample.Integer)
    assert space["max_length"].upper == 513  # the config's high is inclusive, tune's is not
    assert isinstance(space["lora_alpha"], tune.search.sample.Float)  # alpha may be fractional

    fixed = SearchConfig.model_validate({"lora_r": {"choice": [8]}, "lora_alpha": 16})
    assert set(tune_search_space(fixed)) == {"lora_r", "learning_rate", "max_length"}


def test_optuna_accepts_the_space_and_samples_inside_it():
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    space = tune_search_space(SearchConfig())
    searcher = OptunaSearch(space=space, metric="rougeL", mode="max", sampler=optuna.samplers.TPESampler(seed=0))
    for i in range(5):
        suggestion = searcher.suggest(f"t{i}")
        assert suggestion["lora_r"] in (8, 16, 32)
        assert 5e-5 <= suggestion["learning_rate"] <= 5e-4
