"""What `validate` and `run` check before Ray starts: the tokenizer and the data the trials will see,
and whether a hub id can be looked up at all."""

import pytest

from search.checks import check_sweep
from search.config import SweepConfig
from search.hub import prefer_local_cache_when_offline
from tests.conftest import tiny_sweep_dict
from tests.dirty_data import write_long_validation_summaries
from trainables.errors import ConfigError

pytestmark = pytest.mark.unit


def test_a_good_sweep_is_described_by_the_data_its_trials_will_see(tiny_model_path, tmp_path):
    summary = check_sweep(SweepConfig.model_validate(tiny_sweep_dict(tiny_model_path, tmp_path)))
    assert (summary.train_examples, summary.validation_examples, summary.bad_rows) == (64, 6, "")
    fitting, sampled = map(int, summary.fitting_at_min_length.split("/"))
    assert sampled == 64 and 0 < fitting <= sampled
    assert 20 < summary.scaffolding_tokens < 160  # the prompt around an empty dialogue and summary


def test_a_max_length_no_summary_fits_is_refused_naming_the_key(tiny_model_path, tmp_path):
    scaffolding = check_sweep(SweepConfig.model_validate(tiny_sweep_dict(tiny_model_path, tmp_path))).scaffolding_tokens
    tight = tiny_sweep_dict(tiny_model_path, tmp_path, search={"max_length": {"choice": [scaffolding + 1, 192]}})
    with pytest.raises(ConfigError, match=f"search.max_length: at {scaffolding + 1} tokens none of the first 64"):
        check_sweep(SweepConfig.model_validate(tight))


@pytest.mark.parametrize("metric,loss_examples,covered", [("rougeL", "auto", 2), ("eval_loss", "auto", 6)])
def test_a_max_length_no_validation_summary_the_loss_covers_fits_is_refused(tiny_model_path, tmp_path, metric,
                                                                             loss_examples, covered):
    data = write_long_validation_summaries(tmp_path / "data")
    sweep = tiny_sweep_dict(tiny_model_path, tmp_path, data={"path": str(data), "max_validation_examples": 6},
                            evaluation={"loss_examples": loss_examples}, scheduler={"metric": metric})
    with pytest.raises(ConfigError, match=f"search.max_length: at 160 tokens none of the {covered} validation "
                                          r"summaries the loss covers \(evaluation.loss_examples\)"):
        check_sweep(SweepConfig.model_validate(sweep))
    roomy = {**sweep, "search": {**sweep["search"], "max_length": {"choice": [2048]}}}
    assert check_sweep(SweepConfig.model_validate(roomy)).validation_examples == 6  # they fit 2048 tokens


def test_the_hub_is_probed_only_for_a_hub_id_and_skipped_once_it_is_known_offline(tiny_model_path, tmp_path,
                                                                                  monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    local = SweepConfig.model_validate(tiny_sweep_dict(tiny_model_path, tmp_path))
    assert prefer_local_cache_when_offline(local) is None
    hub = SweepConfig.model_validate(tiny_sweep_dict(tiny_model_path, tmp_path, model={"name_or_path": "org/model"}))
    assert prefer_local_cache_when_offline(hub) == "HF_HUB_OFFLINE is set"
