"""Registry contracts: one signature per registry, and the pieces compose shard-invariantly."""

from __future__ import annotations

import inspect

import pytest
import torch

import rlsys.algo as algo


def _params(fn):
    return [(p.name, p.kind) for p in inspect.signature(fn).parameters.values()]


@pytest.mark.parametrize(
    "registry,expected",
    [
        (algo.ADVANTAGES, ["token_rewards", "mask", "group_ids", "values", "gamma", "lam",
                           "norm_std", "eps"]),
        (algo.POLICY_OBJECTIVES, ["logprobs", "old_logprobs", "advantages", "mask", "clip_low",
                                  "clip_high", "clip_c", "is_weights"]),
        (algo.AGGREGATIONS, ["per_token_loss", "mask", "num_tokens", "num_seqs", "norm_len",
                             "seq_ids"]),
        (algo.KL_ESTIMATORS, ["logprobs", "ref_logprobs", "mask"]),
        (algo.DPO_LOSSES, ["chosen_logps", "rejected_logps", "ref_chosen_logps",
                           "ref_rejected_logps", "beta", "label_smoothing"]),
    ],
)
def test_every_entry_has_the_registry_signature(registry, expected):
    for name in registry.names():
        params = _params(registry.get(name))
        assert [p for p, _ in params] == expected, name
        for param, kind in params:
            positional = param in expected[:4] and kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
            assert positional or kind is inspect.Parameter.KEYWORD_ONLY, (name, param)


@pytest.mark.parametrize("aggregation", algo.AGGREGATIONS.names())
def test_grpo_step_is_shard_invariant(aggregation, gen, make_mask):
    """grpo advantages on the full batch (controller), then ppo_clip + aggregation per shard
    with global normalisers: summed shard losses and logprob gradients equal the full batch."""
    mask = make_mask(6, 8, gen)
    rewards = torch.randn(6, 8, generator=gen)
    advantages, _ = algo.ADVANTAGES.get("grpo")(rewards, mask, group_ids=torch.arange(6) // 3)
    old = torch.randn(6, 8, generator=gen)
    base = old + 0.3 * torch.randn(6, 8, generator=gen)
    objective = algo.POLICY_OBJECTIVES.get("ppo_clip")
    reduce = algo.AGGREGATIONS.get(aggregation)
    norms = {"num_tokens": mask.sum(), "num_seqs": 6, "norm_len": 8}

    full_lp = base.clone().requires_grad_(True)
    full = reduce(objective(full_lp, old, advantages, mask)[0], mask, norm_len=8)
    full.backward()
    shard_lp = base.clone().requires_grad_(True)
    total = torch.zeros(())
    for lp, o, a, m in zip(*(torch.split(x, [2, 1, 3]) for x in (shard_lp, old, advantages, mask)),
                           strict=True):
        total = total + reduce(objective(lp, o, a, m)[0], m, **norms)
    total.backward()
    torch.testing.assert_close(total, full, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(shard_lp.grad, full_lp.grad, rtol=1e-5, atol=1e-7)
