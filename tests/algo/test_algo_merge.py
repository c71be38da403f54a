"""Merge methods against hand-computed tensors; the state-dict compatibility check."""

from __future__ import annotations

import math

import pytest
import torch

from rlsys.algo.merge import (
    MERGE_METHODS,
    check_compatible,
    linear,
    slerp,
    task_arithmetic,
    ties,
)


def _t(values):
    return torch.tensor(values, dtype=torch.float64)


def test_linear_is_the_weighted_average():
    """weights 1 and 3: (1 * [0, 4] + 3 * [4, 0]) / 4 = [3, 1]."""
    out = linear([_t([0.0, 4.0]), _t([4.0, 0.0])], weights=[1.0, 3.0])
    torch.testing.assert_close(out, _t([3.0, 1.0]))


def test_task_arithmetic_adds_scaled_task_vectors():
    """base [1, 1]; tasks [2, 1] - base = [1, 0] and [1, 3] - base = [0, 2]; weights 1 and
    -0.5, scale 2: [1, 1] + 2 * ([1, 0] - 0.5 [0, 2]) = [3, -1]."""
    out = task_arithmetic([_t([2.0, 1.0]), _t([1.0, 3.0])], weights=[1.0, -0.5],
                          base=_t([1.0, 1.0]), scale=2.0)
    torch.testing.assert_close(out, _t([3.0, -1.0]))


def test_ties_trims_elects_and_takes_the_disjoint_mean():
    """base 0 (so tau = x), density 0.5 keeps the 2 largest of 4 entries per task:
    tau1 = [3, -1, 2, 0.5] -> [3, 0, 2, 0];  tau2 = [-1, -4, 1, 0.2] -> [0, -4, 1, 0];
    tau3 = [-2, 0.1, 0.3, 5] -> [-2, 0, 0, 5].
    elected sign of the sums [1, -4, 3, 5] = [+, -, +, +];
    agreeing entries: [3], [-4], [2, 1], [5] -> means [3, -4, 1.5, 5]."""
    tensors = [_t([3.0, -1.0, 2.0, 0.5]), _t([-1.0, -4.0, 1.0, 0.2]), _t([-2.0, 0.1, 0.3, 5.0])]
    out = ties(tensors, weights=[1.0, 1.0, 1.0], base=torch.zeros(4, dtype=torch.float64),
               density=0.5)
    torch.testing.assert_close(out, _t([3.0, -4.0, 1.5, 5.0]))
    # density 1: no trimming; sums [0, -4.9, 3.3, 5.7] -> entry 0 has sign 0: nobody agrees,
    # the base value (0) stays; entry 1: [-1, -4] -> -2.5; entry 2: [2, 1, 0.3] -> 1.1;
    # entry 3: [0.5, 0.2, 5] -> 1.9.
    full = ties(tensors, weights=[1.0, 1.0, 1.0], base=torch.zeros(4, dtype=torch.float64))
    torch.testing.assert_close(full, _t([0.0, -2.5, 1.1, 1.9]))


def test_ties_with_a_base_and_scale():
    """base [1, 1], x [3, 1] -> tau [2, 0]; scale 0.5 -> [1 + 1, 1] = [2, 1]."""
    out = ties([_t([3.0, 1.0])], weights=[1.0], base=_t([1.0, 1.0]), scale=0.5)
    torch.testing.assert_close(out, _t([2.0, 1.0]))


def test_slerp_on_orthogonal_unit_vectors():
    """a = [1, 0], b = [0, 1]: omega = pi/2, t = 1/3 -> [cos(pi/6), sin(pi/6)] (on the circle,
    unlike the linear [2/3, 1/3]); t = 0 and 1 give the end points."""
    a, b = _t([1.0, 0.0]), _t([0.0, 1.0])
    torch.testing.assert_close(slerp([a, b], t=1 / 3), _t([math.cos(math.pi / 6), 0.5]))
    torch.testing.assert_close(slerp([a, b], t=0.0), a)
    torch.testing.assert_close(slerp([a, b], t=1.0), b)


def test_slerp_keeps_norms_and_falls_back_to_lerp_when_parallel():
    """a = [2, 0], b = [0, 2], t = 0.5: sin(pi/4)/sin(pi/2) * (a + b) = [sqrt 2, sqrt 2] (norm 2,
    where lerp gives norm sqrt 2); parallel a, 3a: lerp (1 - t) a + t 3a = 2a at t = 0.5."""
    out = slerp([_t([2.0, 0.0]), _t([0.0, 2.0])], t=0.5)
    torch.testing.assert_close(out, _t([math.sqrt(2), math.sqrt(2)]))
    a = _t([1.0, 2.0])
    torch.testing.assert_close(slerp([a, 3 * a], t=0.5), 2 * a)


@pytest.mark.parametrize("name", MERGE_METHODS.names())
def test_merging_identical_models_returns_them(name):
    """Every method maps (x, x) with base x (or any base for linear/slerp) back to x, in the
    input dtype."""
    x = torch.randn(3, 4, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)
    out = MERGE_METHODS.get(name)([x, x], weights=[0.5, 0.5], base=x, t=0.3, density=0.5)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out, x)


def test_bad_inputs_are_rejected():
    a = torch.zeros(2)
    with pytest.raises(ValueError, match="shape"):
        linear([a, torch.zeros(3)], weights=[1.0, 1.0])
    with pytest.raises(ValueError, match="base"):
        task_arithmetic([a], weights=[1.0])
    with pytest.raises(ValueError, match="exactly 2"):
        slerp([a, a, a], t=0.5)
    with pytest.raises(ValueError, match="density"):
        ties([a], weights=[1.0], base=a, density=0.0)


def test_check_compatible_names_the_first_differing_tensor():
    first = {"embed.weight": torch.zeros(4, 2), "layer.0.weight": torch.zeros(2, 2),
             "layer.1.weight": torch.zeros(2, 2)}
    other = {"embed.weight": torch.zeros(4, 2), "layer.0.weight": torch.zeros(2, 3),
             "layer.1.weight": torch.zeros(3, 2)}
    with pytest.raises(ValueError, match=r"'layer\.0\.weight' differs in shape: \(2, 2\) in a, "
                                         r"\(2, 3\) in b"):
        check_compatible({"a": first, "b": other})
    with pytest.raises(ValueError, match="'layer.1.weight' of a is missing from b"):
        check_compatible({"a": first, "b": {k: first[k] for k in list(first)[:2]}})
    check_compatible({"a": first, "b": dict(first)})
