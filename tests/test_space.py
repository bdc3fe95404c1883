import pytest
from ray import tune

from search.config import SearchConfig
from search.space import largest_corner, resolve_hyperparameters
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
        assert suggestion["lora_r"] in (16, 32, 64, 128)
        assert suggestion["lora_alpha_ratio"] in (0.5, 1, 2, 4) and "lora_alpha" not in suggestion
        assert 3e-5 <= suggestion["learning_rate"] <= 3e-3
        hp = resolve_hyperparameters(SearchConfig(), suggestion)
        assert hp.lora_alpha == suggestion["lora_alpha_ratio"] * suggestion["lora_r"]


def test_alpha_is_searched_as_a_ratio_to_the_rank_by_default_and_each_trial_gets_ratio_times_rank():
    search = SearchConfig()
    assert set(search.searched) == {"lora_r", "lora_alpha_ratio", "learning_rate", "max_length"}
    hp = resolve_hyperparameters(search, {"lora_r": 16, "lora_alpha_ratio": 0.5, "learning_rate": 1e-4,
                                          "max_length": 256})
    assert (hp.lora_r, hp.lora_alpha) == (16, 8.0)
    fixed_ratio = SearchConfig.model_validate({"lora_alpha_ratio": 2})
    assert resolve_hyperparameters(fixed_ratio, {"lora_r": 32, "learning_rate": 1e-4, "max_length": 256}).lora_alpha == 64
    assert largest_corner(search).lora_r == 128


def test_a_config_naming_lora_alpha_searches_alpha_itself_and_naming_both_is_refused():
    given = SearchConfig.model_validate({"lora_alpha": {"choice": [16, 32]}})
    assert given.lora_alpha_ratio is None and "lora_alpha" in given.searched
    assert resolve_hyperparameters(given, {"lora_r": 8, "lora_alpha": 32, "learning_rate": 1e-4,
                                           "max_length": 256}).lora_alpha == 32
    with pytest.raises(ValueError, match="give lora_alpha or lora_alpha_ratio, not both"):
        SearchConfig.model_validate({"lora_alpha": 16, "lora_alpha_ratio": {"choice": [1, 2]}})
    with pytest.raises(ValueError, match="give lora_alpha or lora_alpha_ratio"):
        SearchConfig.model_validate({"lora_alpha_ratio": None})
    with pytest.raises(ValueError, match="> 0"):
        SearchConfig.model_validate({"lora_alpha_ratio": {"choice": [0, 1]}})


def test_loraplus_is_plain_lora_unless_given_and_a_given_choice_is_searched_and_reaches_the_trial():
    default = SearchConfig()
    assert "loraplus_lr_ratio" not in default.searched and default.fixed["loraplus_lr_ratio"] == 1
    values = {"lora_r": 16, "lora_alpha_ratio": 1, "learning_rate": 1e-4, "max_length": 256}
    assert resolve_hyperparameters(default, values).loraplus_lr_ratio == 1

    searched = SearchConfig.model_validate({"loraplus_lr_ratio": {"choice": [1, 4, 16]}})
    assert tune_search_space(searched)["loraplus_lr_ratio"].categories == [1, 4, 16]
    assert resolve_hyperparameters(searched, {**values, "loraplus_lr_ratio": 16}).loraplus_lr_ratio == 16
    fixed = SearchConfig.model_validate({"loraplus_lr_ratio": 16})
    assert "loraplus_lr_ratio" not in tune_search_space(fixed)
    assert resolve_hyperparameters(fixed, values).loraplus_lr_ratio == 16
