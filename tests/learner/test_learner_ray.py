"""Two learner ranks as Ray actors (gloo, ZeRO 2 and 3): the sharded step equals the
single-rank full-batch step, weights gather whole, checkpoints save, reload and load in HF."""

from __future__ import annotations

import pytest
import torch

from learner.launch import InProcessLearnerGroup, LearnerCallError, LearnerGroup
from tests.learner.batches import random_rows, token_batch

pytestmark = pytest.mark.slow


def _check_two_ranks_match_one(zero_stage: int, model_dir: str, tmp_path) -> None:
    from transformers import AutoModelForCausalLM

    rows = random_rows(4, 10, seed=5)
    full = token_batch(rows)
    micro_batches = [token_batch(rows[i : i + 1]) for i in range(4)]  # 2 ranks x 2 each
    step_kwargs = {
        "aggregation": "seq_mean_token_mean",
        "num_tokens": int(full.mask.sum()),
        "num_seqs": 4,
    }
    # grad_clip 0 and a large eps: Adam's first step then depends on the gradient's size.
    opts = {"model_path": model_dir, "lr": 1e-3, "eps": 1e-3, "grad_clip": 0.0, "seed": 0}
    single = InProcessLearnerGroup(**opts)
    expected = single.train("train_sft", [full], **step_kwargs)
    expected_params = single.state_dict_for_sync()
    group = LearnerGroup(2, zero_stage=zero_stage, timeout_s=300, **opts)
    try:
        got = group.train("train_sft", micro_batches, **step_kwargs)
        assert got["loss"] == pytest.approx(expected["loss"], rel=1e-5)
        assert got["grad_norm"] == pytest.approx(expected["grad_norm"], rel=1e-4)
        params = group.state_dict_for_sync()
        assert params.keys() == expected_params.keys()
        for name, value in expected_params.items():
            assert params[name].shape == value.shape, name  # whole, not a ZeRO partition
            torch.testing.assert_close(params[name], value, rtol=0, atol=1e-6)
        assert group.call("state_dict_for_sync")[1] is None  # only rank 0 holds the copy
        with pytest.raises(LearnerCallError, match=r"rank [01] failed in train_value.*value_head"):
            group.train("train_value", micro_batches, num_tokens=1)

        path = tmp_path / f"zero{zero_stage}"
        group.save_checkpoint(str(path), extra_state={"cursor": 8})
        group.train("train_sft", micro_batches, **step_kwargs)  # move away from the checkpoint
        assert group.load_checkpoint(str(path)) == {"cursor": 8}
        assert [info["step"] for info in group.call("info")] == [1, 1]
        assert [info["num_threads"] for info in group.call("info")] == [1, 1]
        reloaded = group.state_dict_for_sync()
        hf_state = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).state_dict()
        for name, value in params.items():
            torch.testing.assert_close(reloaded[name], value, rtol=0, atol=0)
            torch.testing.assert_close(hf_state[name], value, rtol=0, atol=0)
    finally:
        group.shutdown()


def test_zero2_two_ranks_equal_one_rank(ray_cluster, tiny_model_dir, tmp_path):
    _check_two_ranks_match_one(2, tiny_model_dir, tmp_path)


def test_zero3_two_ranks_equal_one_rank(ray_cluster, tiny_model_dir, tmp_path):
    _check_two_ranks_match_one(3, tiny_model_dir, tmp_path)


def test_a_rank_holding_two_cpus_runs_two_threads(ray_cluster, tiny_model_dir):
    group = LearnerGroup(1, num_cpus_per_actor=2, timeout_s=300, model_path=tiny_model_dir)
    try:
        assert group.call("info")[0]["num_threads"] == 2
    finally:
        group.shutdown()
