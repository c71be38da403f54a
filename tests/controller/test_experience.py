"""Controller-side batch math: experience layout, token rewards, dynamic sampling, overlong
shaping, row splitting over ranks, and the phase timer."""

import pytest
import torch

from rlsys.controller.experience import (
    build_experience,
    compute_advantages,
    informative_groups,
    overlong_penalty,
    select,
    token_rewards,
)
from rlsys.controller.learners import split_rows
from rlsys.controller.phases import PhaseTimer
from rlsys.types import Completion


def _completions():
    return [Completion(0, [5, 6], [7, 8, 9], "a", [-0.1, -0.2, -0.3], "stop"),
            Completion(0, [5, 6], [4], "b", [-0.5], "length"),
            Completion(1, [3], [2, 2], "c", [-1.0, -2.0], "stop")]


def test_build_experience_layout():
    exp = build_experience(_completions(), [1.0, 0.0, 0.5], group_ids=[0, 0, 1], pad_id=0)
    t = exp.tokens
    assert t.input_ids.tolist() == [[5, 6, 7, 8, 9], [5, 6, 4, 0, 0], [3, 2, 2, 0, 0]]
    assert t.mask.tolist() == [[False, False, True, True, True],
                               [False, False, True, False, False],
                               [False, True, True, False, False]]
    assert t.seq_ids.tolist() == [[1] * 5, [1, 1, 1, 0, 0], [1, 1, 1, 0, 0]]
    assert t.position_ids.tolist()[1] == [0, 1, 2, 0, 0]
    assert exp.rollout_logprobs[0, 2:].tolist() == pytest.approx([-0.1, -0.2, -0.3])
    assert exp.rollout_logprobs[~t.mask].abs().sum() == 0


def test_token_rewards_sit_on_last_response_token():
    exp = build_experience(_completions(), [1.0, 0.0, 0.5], group_ids=[0, 0, 1], pad_id=0)
    r = token_rewards(exp, extra=torch.tensor([0.0, -1.0, 0.0]))
    assert r.tolist() == [[0, 0, 0, 0, 1.0], [0, 0, -1.0, 0, 0], [0, 0, 0.5, 0, 0]]


def test_grpo_advantages_through_the_registry_are_masked():
    exp = build_experience(_completions(), [1.0, 0.0, 0.5], group_ids=[0, 0, 1], pad_id=0)
    exp = compute_advantages(exp, estimator="grpo", gamma=1.0, lam=1.0, norm_std=False)
    # group 0: scores 1, 0 -> mean 0.5 -> +0.5 / -0.5; group 1 has one sample -> 0
    assert exp.advantages[0, 2:].tolist() == [0.5] * 3
    assert exp.advantages[1, 2].item() == -0.5
    assert exp.advantages[~exp.tokens.mask].abs().sum() == 0
    assert exp.advantages[2].abs().sum() == 0


def test_kl_in_reward_requires_logprobs():
    exp = build_experience(_completions(), [1.0, 0.0, 0.5], group_ids=[0, 0, 1], pad_id=0)
    with pytest.raises(ValueError, match="old_logprobs and ref_logprobs"):
        compute_advantages(exp, estimator="grpo", gamma=1, lam=1, norm_std=True, kl_coef=0.1)


def test_informative_groups_drops_all_equal_groups():
    keep = informative_groups(torch.tensor([1.0, 1.0, 0.0, 1.0, 0.3, 0.3]),
                              torch.tensor([0, 0, 1, 1, 2, 2]))
    assert keep.tolist() == [False, False, True, True, False, False]


def test_overlong_penalty_ramp():
    p = overlong_penalty(torch.tensor([10, 12, 14, 16]), max_new_tokens=16, buffer=4,
                         penalty=2.0)
    assert p.tolist() == [0.0, 0.0, -1.0, -2.0]
    assert overlong_penalty(torch.tensor([16]), max_new_tokens=16, buffer=0,
                            penalty=1.0).tolist() == [0.0]


def test_select_slices_every_row_tensor():
    exp = build_experience(_completions(), [1.0, 0.0, 0.5], group_ids=[0, 0, 1], pad_id=0)
    exp.old_logprobs = torch.randn(3, 5)
    part = select(exp, torch.tensor([2, 0]))
    assert part.rewards.tolist() == [0.5, 1.0] and part.group_ids.tolist() == [1, 0]
    assert torch.equal(part.old_logprobs, exp.old_logprobs[[2, 0]])
    assert part.ref_logprobs is None


@pytest.mark.parametrize("rows,mb,ranks", [(5, 2, 2), (16, 4, 2), (7, 8, 1), (3, 1, 3),
                                           (9, 2, 2)])
def test_split_rows_covers_every_row_once_with_equal_counts(rows, mb, ranks):
    plan = split_rows(rows, mb, ranks)
    assert len(plan) == ranks and len({len(p) for p in plan}) == 1
    covered = [i for rank in plan for r in rank for i in r]
    assert covered == list(range(rows))
    assert all(len(r) >= 1 for rank in plan for r in rank)


def test_split_rows_refuses_fewer_rows_than_ranks():
    with pytest.raises(ValueError, match="cannot be shared"):
        split_rows(1, 4, 2)


def test_phase_timer_other_is_the_rest():
    timer = PhaseTimer()
    with timer("generate"):
        pass
    m = timer.metrics(step_s=10.0)
    assert m["time/train"] == 0.0 and 9.9 < m["time/other"] <= 10.0
    assert m["time/other_frac"] == pytest.approx(m["time/other"] / 10.0)


def _two_sample_batch(prompts, rewards):
    """A ``Batch`` with two completions per prompt and the given rewards."""
    from rewards.base import Score
    from rlsys.controller.rl import Batch

    comps = [Completion(i // 2, [1], [2], f"r{i}", [-0.1], "stop")
             for i in range(2 * len(prompts))]
    return Batch(comps, [Score(float(r)) for r in rewards], [{"prompt": p} for p in prompts], 0)


def test_refill_batches_keep_completions_pointing_at_their_records():
    batch = _two_sample_batch

    first = batch(["a", "b"], [1, 0, 1, 1]).keep(torch.tensor([True, True, False, False]))
    first.extend(batch(["c"], [0, 1]))
    assert [first.records[c.prompt_index]["prompt"] for c in first.completions] == \
        ["a", "a", "c", "c"]
    assert first.group_ids == [0, 0, 1, 1]


def test_drawn_accuracy_counts_the_groups_dynamic_sampling_dropped():
    from rlsys.controller.experience import build_experience, informative_groups
    from rlsys.controller.rl import batch_metrics

    batch = _two_sample_batch

    # a: one right of two (kept); b and c: both wrong (dropped)
    first = batch(["a", "b", "c"], [1, 0, 0, 0, 0, 0])
    first = first.keep(informative_groups(first.rewards(), torch.tensor(first.group_ids)))
    more = batch(["d"], [0, 1])  # refill: kept
    first.extend(more.keep(informative_groups(more.rewards(), torch.tensor(more.group_ids))))
    exp = build_experience(first.completions, first.rewards().tolist(),
                           group_ids=first.group_ids, pad_id=0)
    metrics = batch_metrics(first, exp)
    assert metrics["samples"] == 4 and metrics["samples/drawn"] == 8
    assert metrics["accuracy"] == 0.5  # trained-on samples: a and d, one right each
    assert metrics["accuracy/drawn"] == 2 / 8  # 1 (a) + 0 (b) + 0 (c) + 1 (d) of 8
