"""LoRA under DeepSpeed ZeRO-3 on two Ray ranks (gloo) equals one in-process rank: same loss,
gradient norm, adapter weights and merged weights after a sharded step; the adapter-disabled
reference and the adapter directory work with partitioned parameters."""

from __future__ import annotations

import pytest
import torch

from learner.launch import InProcessLearnerGroup, LearnerGroup
from tests.learner.batches import random_rows, token_batch

pytestmark = pytest.mark.slow

LORA = {"r": 4, "alpha": 8.0, "dropout": 0.0, "target_modules": ["q_proj", "v_proj", "up_proj"],
        "modules_to_save": []}


@pytest.mark.parametrize("zero_stage", [3])
def test_lora_zero3_two_ranks_equal_one_rank(ray_cluster, tiny_model_dir, tmp_path, zero_stage):
    rows = random_rows(4, 10, seed=11)
    full = token_batch(rows)
    micro_batches = [token_batch(rows[i : i + 1]) for i in range(4)]  # 2 ranks x 2 each
    kwargs = {"aggregation": "seq_mean_token_mean", "num_tokens": int(full.mask.sum()),
              "num_seqs": 4}
    # grad_clip 0 and a large eps: Adam's first steps then depend on the gradient's size.
    opts = {"model_path": tiny_model_dir, "lr": 1e-2, "eps": 1e-3, "grad_clip": 0.0, "seed": 0,
            "lora": LORA}
    single = InProcessLearnerGroup(**opts)
    expected = [single.train("train_sft", [full], **kwargs) for _ in range(2)]
    group = LearnerGroup(2, zero_stage=zero_stage, timeout_s=600, **opts)
    try:
        got = [group.train("train_sft", micro_batches, **kwargs) for _ in range(2)]
        for a, b in zip(got, expected, strict=True):
            assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
            assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-4)
        assert expected[1]["grad_norm"] > 0
        adapter, layout = group.call("adapter_for_sync")[0]
        want, _ = single.call("adapter_for_sync")[0]
        assert adapter.keys() == want.keys() and layout["r"] == 4
        for name, value in want.items():
            assert adapter[name].shape == value.shape, name  # whole, not a ZeRO partition
            torch.testing.assert_close(adapter[name], value, rtol=0, atol=1e-6)
        merged, want_merged = group.state_dict_for_sync(), single.state_dict_for_sync()
        assert merged.keys() == want_merged.keys()
        for name, value in want_merged.items():
            torch.testing.assert_close(merged[name], value, rtol=0, atol=1e-6)
        ref = group.call_sharded("forward_ref_logprobs", [micro_batches[0], micro_batches[1]])
        want_ref = InProcessLearnerGroup(**{**opts, "lora": None}).call(
            "forward_logprobs", micro_batches[0])[0]
        torch.testing.assert_close(ref[0], want_ref, rtol=0, atol=1e-5)
        path = tmp_path / "ckpt"
        group.save_checkpoint(str(path), extra_state={})
        assert (path / "adapter_model.safetensors").is_file()
    finally:
        group.shutdown()
