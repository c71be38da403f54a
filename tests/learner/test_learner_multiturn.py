"""The learner on multi-turn rows (actors.episodes -> rlsys.controller.experience): log-probs of
an interleaved trajectory equal a per-token reference loop, and observation tokens, which are
context only, carry no loss and get no gradient of their own."""

from __future__ import annotations

import torch

from learner.learner import Learner
from rlsys.controller.experience import build_experience, compute_advantages
from rlsys.types import Completion, PolicyLossSpec

PROMPT = [1, 9690, 198, 2683, 198]
#: generated, observation, generated, observation, generated (the masks of a 3-turn episode)
SEGMENTS = [([201, 202, 2], True), ([198, 1, 3070, 198, 40, 41], False), ([203, 204, 2], True),
            ([198, 1, 3070, 198, 50], False), ([205, 2], True)]


def trajectory(reward: float, prompt: list[int] = PROMPT) -> Completion:
    ids = [t for seg, _ in SEGMENTS for t in seg]
    mask = [gen for seg, gen in SEGMENTS for _ in seg]
    return Completion(0, list(prompt), ids, "", [0.0] * len(ids), "stop", loss_mask=mask,
                      turn_rewards=[(len(ids) - 1, reward)])


def test_logprobs_of_a_multi_turn_row_equal_a_per_token_loop(tiny_model_dir):
    learner = Learner(model_path=tiny_model_dir, lr=1e-3, seed=0)
    exp = build_experience([trajectory(1.0), trajectory(0.0, PROMPT[:3])], [1.0, 0.0],
                           group_ids=[0, 0], pad_id=0)
    got = learner.forward_logprobs(exp.tokens)
    from transformers import AutoModelForCausalLM  # the same weights, loaded on their own

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, torch_dtype=torch.float32)
    for row in range(2):
        ids = exp.tokens.input_ids[row][exp.tokens.seq_ids[row] > 0].tolist()
        for t in range(1, len(ids)):
            with torch.no_grad():
                logits = model(torch.tensor([ids[:t]])).logits[0, -1].float()
            want = torch.log_softmax(logits, -1)[ids[t]].item()
            if exp.tokens.mask[row, t]:
                assert abs(got[row, t].item() - want) < 1e-4, (row, t)
    # observation positions are not training targets: 3 + 3 + 2 generated tokens per row
    assert exp.tokens.mask.sum(dim=1).tolist() == [8, 8]


def test_observation_tokens_get_no_loss(tiny_model_dir):
    other = Completion(0, PROMPT, [301, 302, 303, 2], "", [0.0] * 4, "stop",
                       loss_mask=[True] * 4, turn_rewards=[(3, 0.0)])
    exp = build_experience([trajectory(1.0), other], [1.0, 0.0], group_ids=[0, 0], pad_id=0)
    exp = compute_advantages(exp, estimator="grpo", gamma=1.0, lam=1.0, norm_std=True)
    assert exp.advantages is not None
    assert (exp.advantages[~exp.tokens.mask] == 0).all()
    spec, tokens = PolicyLossSpec(), int(exp.tokens.mask.sum())
    results = []
    for tamper in (False, True):
        learner = Learner(model_path=tiny_model_dir, lr=1e-2, seed=0)
        exp.old_logprobs = learner.forward_logprobs(exp.tokens)
        before = exp.old_logprobs.clone()
        step = exp
        if tamper:  # garbage where mask is False (observations, prompt, padding): no effect
            step = build_experience([trajectory(1.0), other], [1.0, 0.0], group_ids=[0, 0],
                                    pad_id=0)
            off = ~exp.tokens.mask
            step.advantages = torch.where(off, torch.full_like(exp.advantages, 100.0),
                                          exp.advantages)
            step.old_logprobs = torch.where(off, torch.full_like(before, -3.0), before)
        learner.train_policy([step], spec=spec, num_tokens=tokens, num_seqs=2)
        results.append((before, learner.forward_logprobs(exp.tokens)))
    (before, after), (_, tampered) = results
    assert torch.allclose(after, tampered, atol=1e-6)
    gen = exp.tokens.mask[0]
    # the rewarded trajectory's generated tokens became likelier
    assert (after[0][gen] - before[0][gen]).sum() > 0
