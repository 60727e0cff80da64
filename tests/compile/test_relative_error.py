"""relative_error, the measure by which the compiler's check and the agreement tests compare
compiled files with the eager model."""

import math

import pytest
import torch

from nequip.compile import relative_error


def test_equal_tensors_have_no_error():
    value = torch.tensor([[1.5, -2.0], [0.0, 3.25]], dtype=torch.float64)
    assert relative_error(value, value.clone()) == 0.0


def test_error_is_the_largest_difference_relative_to_the_largest_reference_entry():
    reference = torch.tensor([10.0, -40.0, 0.001], dtype=torch.float64)
    value = reference + torch.tensor([0.4, -0.2, 0.8], dtype=torch.float64)
    assert relative_error(value, reference) == pytest.approx(0.8 / 40.0, rel=1e-12)


def test_small_references_are_compared_absolutely():
    """Below 1 the scale stays 1: a near-zero force component is not held to a relative standard."""
    reference = torch.tensor([1e-8, -2e-8], dtype=torch.float64)
    value = torch.tensor([3e-8, -2e-8], dtype=torch.float64)
    assert relative_error(value, reference) == pytest.approx(2e-8, rel=1e-9)


def test_error_is_symmetric_in_sign_and_takes_float32_values():
    reference = torch.tensor([2.0, 4.0], dtype=torch.float64)
    value = torch.tensor([2.0, 3.0], dtype=torch.float32)
    assert relative_error(value, reference) == pytest.approx(0.25)
    assert relative_error(-value, -reference) == pytest.approx(0.25)


def test_shape_mismatch_is_infinite():
    assert relative_error(torch.zeros(3, 1), torch.zeros(3)) == math.inf
    assert relative_error(torch.zeros(1, 3, 3), torch.zeros(3, 3)) == math.inf


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_a_non_finite_value_on_either_side_is_infinite(bad):
    finite = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    broken = finite.clone()
    broken[1] = bad
    assert relative_error(broken, finite) == math.inf
    assert relative_error(finite, broken) == math.inf


def test_nan_does_not_match_nan():
    """A model with NaN weights gives NaN eagerly and compiled: that is no agreement."""
    nan = torch.full((2, 3), float("nan"), dtype=torch.float64)
    assert relative_error(nan, nan.clone()) == math.inf


def test_empty_tensors_of_the_same_shape_agree():
    """A system with no edges has (0, 3, 3) edge quantities; an atom-less output has no entries."""
    assert relative_error(torch.zeros(0, 3), torch.zeros(0, 3)) == 0.0
    assert relative_error(torch.zeros(0, 3), torch.zeros(0, 2)) == math.inf
