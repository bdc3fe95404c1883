"""trainables.divergence's rule: when a trial's training loss says it has diverged."""

import math

import pytest

from trainables.divergence import DIVERGED_STEPS, divergence

pytestmark = pytest.mark.unit


def test_three_steps_in_a_row_at_the_ratio_of_the_first_steps_loss_are_a_divergence():
    assert DIVERGED_STEPS == 3
    assert divergence(2.5, [2.5, 6.2, 8.6, 6.3], ratio=2.0) == (
        "training loss 6.2, 8.6, 6.3, each at least 2x its first step's 2.5")
    assert divergence(2.5, [5.0, 5.0, 5.0], ratio=2.0) is not None  # at the ratio counts


def test_fewer_steps_in_a_row_or_a_loss_under_the_ratio_are_not():
    assert divergence(2.5, [2.5, 9.0, 9.0], ratio=2.0) is None  # two steps so far
    assert divergence(2.5, [9.0, 2.4, 9.0, 9.0], ratio=2.0) is None  # the run was broken
    assert divergence(2.5, [4.9, 4.9, 4.9], ratio=2.0) is None
    assert divergence(2.5, [4.9, 4.9, 4.9], ratio=1.5) is not None
    assert divergence(2.5, [], ratio=2.0) is None


def test_a_model_that_already_fits_its_data_must_also_rise_a_whole_nat_before_it_has_diverged():
    assert divergence(0.05, [0.12, 0.15, 0.11], ratio=2.0) is None  # twice its first loss: noise at that level
    assert divergence(0.05, [1.2, 1.5, 1.1], ratio=2.0) == (
        "training loss 1.2, 1.5, 1.1, each at least 1 above its first step's 0.05")


def test_a_loss_that_is_not_a_number_diverges_at_once_whatever_came_before():
    assert divergence(2.5, [2.4, math.nan], ratio=2.0) == "training loss nan"
    assert divergence(None, [math.inf], ratio=2.0) == "training loss inf"


def test_no_ratio_never_stops_a_trial():
    assert divergence(2.5, [math.nan], ratio=None) is None
    assert divergence(2.5, [50.0, 50.0, 50.0], ratio=None) is None
