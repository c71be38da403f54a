"""Advantage estimators: hand-derived values, closed forms, reference loops, invariances."""

from __future__ import annotations

import math

import pytest
import torch

from rlsys.algo.advantages import ADVANTAGES, discounted_returns, masked_whiten

# ---------------------------------------------------------------- readable reference loops


def _reference_gae(rewards, values, mask, gamma, lam):
    advantages = torch.zeros_like(rewards)
    for i in range(rewards.shape[0]):
        idx = [t for t in range(rewards.shape[1]) if mask[i, t]]
        next_value, next_adv = 0.0, 0.0
        for t in reversed(idx):
            delta = float(rewards[i, t]) + gamma * next_value - float(values[i, t])
            next_adv = delta + gamma * lam * next_adv
            next_value = float(values[i, t])
            advantages[i, t] = next_adv
    return advantages, torch.where(mask, advantages + values, 0)


def _reference_returns(rewards, mask, gamma):
    out = torch.zeros_like(rewards)
    for i in range(rewards.shape[0]):
        running = 0.0
        for t in reversed(range(rewards.shape[1])):
            if mask[i, t]:
                running = float(rewards[i, t]) + gamma * running
                out[i, t] = running
    return out


def _reference_scores(rewards, mask):
    return [sum(float(rewards[i, t]) for t in range(mask.shape[1]) if mask[i, t])
            for i in range(mask.shape[0])]


def _reference_group(rewards, mask, group_ids, kind, norm_std=True, eps=1e-6):
    scores = _reference_scores(rewards, mask)
    adv = torch.zeros(mask.shape[0], dtype=rewards.dtype)
    for i, s in enumerate(scores):
        members = [scores[j] for j in range(len(scores)) if group_ids[j] == group_ids[i]]
        n = len(members)
        mean = sum(members) / n
        if kind == "rloo":
            adv[i] = s - (sum(members) - s) / (n - 1) if n > 1 else 0.0
        elif kind == "grpo":
            std = math.sqrt(sum((m - mean) ** 2 for m in members) / (n - 1)) if n > 1 else 0.0
            adv[i] = (s - mean) / (std + eps) if norm_std else s - mean
        else:  # group mean only
            adv[i] = mean
    return adv


def _reference_whiten(x, mask, eps=1e-6):
    vals = [float(x[i, t]) for i in range(x.shape[0]) for t in range(x.shape[1]) if mask[i, t]]
    mean = sum(vals) / len(vals)
    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1))
    return torch.where(mask, (x - mean) / (std + eps), 0)


# ---------------------------------------------------------------- fixtures


@pytest.fixture
def batch(gen, make_mask):
    """6 rows in 2 groups of 3, T = 9, masks with holes, dense random token rewards."""
    mask = make_mask(6, 9, gen, gaps=True)
    rewards = torch.randn(6, 9, generator=gen)
    values = torch.randn(6, 9, generator=gen)
    group_ids = torch.tensor([7, 7, 7, 3, 3, 3])
    return rewards, values, mask, group_ids


def _call(name, rewards, mask, **kwargs):
    return ADVANTAGES.get(name)(rewards, mask, **kwargs)


# ---------------------------------------------------------------- GAE


def test_gae_hand_example():
    """r = [0, 0, 1], V = [0.5] * 3, gamma = lam = 0.5, V after the end = 0.
    delta_2 = 1 + 0 - 0.5 = 0.5; delta_1 = 0 + 0.5*0.5 - 0.5 = -0.25; delta_0 = -0.25.
    A_2 = 0.5; A_1 = -0.25 + 0.25*0.5 = -0.125; A_0 = -0.25 + 0.25*(-0.125) = -0.28125.
    returns = A + V = [0.21875, 0.375, 1.0]; the padding position stays 0."""
    rewards = torch.tensor([[0.0, 0.0, 1.0, 9.0]])
    values = torch.tensor([[0.5, 0.5, 0.5, 9.0]])
    mask = torch.tensor([[True, True, True, False]])
    adv, ret = _call("gae", rewards, mask, values=values, gamma=0.5, lam=0.5)
    torch.testing.assert_close(adv, torch.tensor([[-0.28125, -0.125, 0.5, 0.0]]))
    torch.testing.assert_close(ret, torch.tensor([[0.21875, 0.375, 1.0, 0.0]]))


def test_gae_lambda_one_is_return_minus_value(batch):
    rewards, values, mask, _ = batch
    adv, ret = _call("gae", rewards, mask, values=values, gamma=0.9, lam=1.0)
    expected_returns = discounted_returns(rewards, mask, gamma=0.9)
    torch.testing.assert_close(adv, torch.where(mask, expected_returns - values, 0))
    torch.testing.assert_close(ret, expected_returns)


def test_gae_lambda_zero_is_td_error():
    """Contiguous response at t = 1..3: A_t = r_t + gamma V_{t+1} - V_t, V_4 := 0."""
    rewards = torch.tensor([[5.0, 1.0, 2.0, 3.0]])
    values = torch.tensor([[5.0, 0.5, -1.0, 2.0]])
    mask = torch.tensor([[False, True, True, True]])
    adv, _ = _call("gae", rewards, mask, values=values, gamma=0.9, lam=0.0)
    expected = torch.tensor([[0.0, 1.0 + 0.9 * -1.0 - 0.5, 2.0 + 0.9 * 2.0 + 1.0, 3.0 - 2.0]])
    torch.testing.assert_close(adv, expected)


@pytest.mark.parametrize("gamma,lam", [(1.0, 1.0), (0.9, 0.95), (0.7, 0.0)])
def test_gae_matches_reference(batch, gamma, lam):
    rewards, values, mask, _ = batch
    adv, ret = _call("gae", rewards, mask, values=values, gamma=gamma, lam=lam)
    ref_adv, ref_ret = _reference_gae(rewards, values, mask, gamma, lam)
    torch.testing.assert_close(adv, ref_adv, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ret, ref_ret, rtol=1e-5, atol=1e-6)


def test_gae_whitened_whitens_and_keeps_returns(batch):
    rewards, values, mask, _ = batch
    adv, ret = _call("gae_whitened", rewards, mask, values=values, gamma=0.9, lam=0.95)
    raw, raw_ret = _reference_gae(rewards, values, mask, 0.9, 0.95)
    torch.testing.assert_close(adv, _reference_whiten(raw, mask), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ret, raw_ret, rtol=1e-5, atol=1e-6)


def test_gae_requires_values(batch):
    rewards, _, mask, _ = batch
    with pytest.raises(ValueError, match="values"):
        _call("gae", rewards, mask)


# ---------------------------------------------------------------- outcome estimators


def test_grpo_hand_example():
    """One group, outcome rewards [1, 0, 0, 1] on the last response token: mean 0.5, Bessel
    std sqrt(4 * 0.25 / 3) = 0.57735, A = +-0.5 / 0.57735 = +-0.866025 on every response token.
    Dr.GRPO: A = +-0.5; RLOO: A = n/(n-1) (s - mean) = 4/3 * +-0.5 = +-0.666667."""
    mask = torch.tensor([[False, True, True]] * 4)
    rewards = torch.zeros(4, 3)
    rewards[:, 2] = torch.tensor([1.0, 0.0, 0.0, 1.0])
    group_ids = torch.zeros(4, dtype=torch.long)
    signs = torch.tensor([1.0, -1.0, -1.0, 1.0]).unsqueeze(-1)
    expected_mask = mask.float()
    for name, magnitude in [("grpo", 0.866025), ("dr_grpo", 0.5), ("rloo", 2.0 / 3.0)]:
        adv, ret = _call(name, rewards, mask, group_ids=group_ids)
        torch.testing.assert_close(adv, signs * magnitude * expected_mask, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(ret, rewards[:, 2:3] * expected_mask)


@pytest.mark.parametrize("name", ["grpo", "dr_grpo", "rloo", "reinforce_pp_baseline"])
def test_constant_group_rewards_give_zero_advantages(name, make_mask, gen):
    mask = make_mask(6, 7, gen)
    rewards = torch.zeros(6, 7)
    last = mask.long().cumsum(-1).argmax(-1)  # last response token of each row
    rewards[torch.arange(6), last] = torch.tensor([0.3, 0.3, 0.3, -2.0, -2.0, -2.0])
    adv, _ = _call(name, rewards, mask, group_ids=torch.tensor([0, 0, 0, 1, 1, 1]))
    assert torch.equal(adv, torch.zeros_like(adv))


@pytest.mark.parametrize("norm_std", [True, False])
def test_grpo_matches_reference(batch, norm_std):
    rewards, _, mask, group_ids = batch
    adv, ret = _call("grpo", rewards, mask, group_ids=group_ids, norm_std=norm_std)
    ref = _reference_group(rewards, mask, group_ids, "grpo", norm_std=norm_std)
    torch.testing.assert_close(adv, torch.where(mask, ref.unsqueeze(-1), 0), rtol=1e-5, atol=1e-6)
    scores = torch.tensor(_reference_scores(rewards, mask))
    torch.testing.assert_close(ret, torch.where(mask, scores.unsqueeze(-1), 0))


def test_dr_grpo_ignores_norm_std(batch):
    rewards, _, mask, group_ids = batch
    adv, _ = _call("dr_grpo", rewards, mask, group_ids=group_ids, norm_std=True)
    expected, _ = _call("grpo", rewards, mask, group_ids=group_ids, norm_std=False)
    torch.testing.assert_close(adv, expected)


def test_rloo_matches_reference_and_closed_form(batch):
    rewards, _, mask, group_ids = batch
    adv, _ = _call("rloo", rewards, mask, group_ids=group_ids)
    ref = _reference_group(rewards, mask, group_ids, "rloo")
    torch.testing.assert_close(adv, torch.where(mask, ref.unsqueeze(-1), 0), rtol=1e-5, atol=1e-6)
    centered, _ = _call("grpo", rewards, mask, group_ids=group_ids, norm_std=False)
    torch.testing.assert_close(adv, 3 / 2 * centered, rtol=1e-5, atol=1e-6)  # G = 3


def test_singleton_groups_get_zero_advantage():
    mask = torch.ones(3, 2, dtype=torch.bool)
    rewards = torch.tensor([[0.0, 1.0], [0.0, 0.0], [0.0, 5.0]])
    for name in ["grpo", "rloo", "dr_grpo"]:
        adv, _ = _call(name, rewards, mask, group_ids=torch.tensor([0, 1, 1]))
        assert torch.equal(adv[0], torch.zeros(2)), name
        assert not torch.isnan(adv).any(), name


@pytest.mark.parametrize("gamma", [1.0, 0.8])
def test_reinforce_pp_matches_reference(batch, gamma):
    rewards, _, mask, _ = batch
    adv, ret = _call("reinforce_pp", rewards, mask, gamma=gamma)
    ref_ret = _reference_returns(rewards, mask, gamma)
    torch.testing.assert_close(ret, ref_ret, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(adv, _reference_whiten(ref_ret, mask), rtol=1e-5, atol=1e-5)
    masked = adv[mask]
    torch.testing.assert_close(masked.mean(), torch.tensor(0.0), atol=1e-6, rtol=0)
    torch.testing.assert_close(masked.std(), torch.tensor(1.0), atol=1e-5, rtol=0)


def test_reinforce_pp_baseline_matches_reference(batch):
    rewards, _, mask, group_ids = batch
    adv, ret = _call("reinforce_pp_baseline", rewards, mask, group_ids=group_ids, gamma=0.9)
    ref_ret = _reference_returns(rewards, mask, 0.9)
    group_mean = _reference_group(rewards, mask, group_ids, "mean")
    expected = _reference_whiten(torch.where(mask, ref_ret - group_mean.unsqueeze(-1), 0), mask)
    torch.testing.assert_close(adv, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ret, ref_ret, rtol=1e-5, atol=1e-6)


def test_reinforce_pp_without_std_only_centres():
    """Returns on the 3 masked tokens with gamma = 1: [1+2, 2, 4]; mean 3 -> [0, -1, 1]."""
    rewards = torch.tensor([[1.0, 2.0, 0.0], [4.0, 0.0, 0.0]])
    mask = torch.tensor([[True, True, False], [True, False, False]])
    adv, ret = _call("reinforce_pp", rewards, mask, norm_std=False)
    torch.testing.assert_close(adv, torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0]]))
    torch.testing.assert_close(ret, torch.tensor([[3.0, 2.0, 0.0], [4.0, 0.0, 0.0]]))


# ---------------------------------------------------------------- contract for every entry


@pytest.mark.parametrize("name", ADVANTAGES.names())
def test_uniform_signature_masking_and_no_grad(name, batch):
    rewards, values, mask, group_ids = batch
    rewards = rewards.clone().requires_grad_(True)
    kwargs = dict(group_ids=group_ids, values=values, gamma=0.9, lam=0.95, norm_std=True,
                  eps=1e-6)
    adv, ret = _call(name, rewards, mask, **kwargs)
    assert adv.shape == ret.shape == mask.shape
    assert not adv.requires_grad and not ret.requires_grad
    assert torch.equal(adv[~mask], torch.zeros_like(adv[~mask]))
    assert torch.equal(ret[~mask], torch.zeros_like(ret[~mask]))
    # Rewards and values at masked-out positions are ignored, even when they are garbage.
    garbage = torch.where(mask, rewards.detach(), float("nan"))
    adv2, ret2 = _call(name, garbage, mask, **{**kwargs, "values": torch.where(mask, values, 1e9)})
    torch.testing.assert_close(adv2, adv)
    torch.testing.assert_close(ret2, ret)


@pytest.mark.parametrize("name", ["grpo", "rloo", "reinforce_pp_baseline", "dr_grpo"])
def test_group_estimators_require_group_ids(name, batch):
    rewards, _, mask, _ = batch
    with pytest.raises(ValueError, match="group_ids"):
        _call(name, rewards, mask)


def test_shape_mismatch_names_the_argument(batch):
    rewards, _, mask, group_ids = batch
    with pytest.raises(ValueError, match="token_rewards"):
        _call("grpo", rewards[:, :-1], mask, group_ids=group_ids)


def test_masked_whiten_empty_mask_is_zero():
    out = masked_whiten(torch.randn(2, 3), torch.zeros(2, 3, dtype=torch.bool))
    assert torch.equal(out, torch.zeros(2, 3))
