"""LoRA checkpoints (one in-process rank, tiny Llama, real peft): a checkpoint is an adapter
directory ``PeftModel.from_pretrained`` reads as it is, a final save is the merged model plus
``adapter/``, ``rlsys export --merge`` writes a model whose logits equal the adapter model's
(fp32, atol 1e-5), and resuming with LoRA (dropout on) reproduces the weights exactly."""

from __future__ import annotations

import pytest
import torch

from learner.launch import free_port
from learner.learner import Learner
from rlsys.cli import main
from rlsys.controller.export import merge_export
from tests.learner.batches import random_rows, token_batch

LORA = {"r": 4, "alpha": 8.0, "dropout": 0.1, "target_modules": ["q_proj", "v_proj", "gate_proj"],
        "modules_to_save": []}


def _learner(model_dir: str) -> Learner:
    return Learner(model_path=model_dir, lr=1e-2, grad_clip=1.0, seed=0, lora=LORA,
                   master_port=free_port())


def _step(learner: Learner, seed: int) -> None:
    batch = token_batch(random_rows(2, 12, seed=seed))
    learner.train_sft([batch], num_tokens=int(batch.mask.sum()))


def _logits(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(input_ids=ids).logits


def _adapter_model(base_dir: str, adapter_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    return PeftModel.from_pretrained(base, str(adapter_dir))


def test_checkpoint_is_an_adapter_dir_and_export_merges_it(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    learner = _learner(tiny_model_dir)
    for seed in range(3):
        _step(learner, seed)
    stage = tmp_path / "stages" / "sft"
    ckpt = learner.save_checkpoint(stage / "ckpt" / "step_3")
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in ckpt.iterdir()}
    assert not (ckpt / "model.safetensors").exists()  # the base weights are not copied
    ids = torch.tensor([[5, 17, 300, 42, 7, 99, 1000, 3]])
    batch = token_batch(ids.tolist())
    adapted = _adapter_model(tiny_model_dir, ckpt)
    expected = torch.log_softmax(_logits(adapted, ids), -1)[0, :-1].gather(-1, ids[0, 1:, None])
    torch.testing.assert_close(learner.forward_logprobs(batch)[0, 1:], expected[:, 0],
                               rtol=0, atol=1e-5)
    base_logits = _logits(AutoModelForCausalLM.from_pretrained(tiny_model_dir), ids)
    assert (base_logits - _logits(adapted, ids)).abs().max() > 1e-3  # the adapter is not zero

    out = merge_export(stage, tmp_path / "merged")  # a stage dir: its newest checkpoint
    merged = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    torch.testing.assert_close(_logits(merged, ids), _logits(adapted, ids), rtol=0, atol=1e-5)

    final = learner.save_checkpoint(stage / "final", training_state=False)
    plain = AutoModelForCausalLM.from_pretrained(final, dtype=torch.float32)
    torch.testing.assert_close(_logits(plain, ids), _logits(adapted, ids), rtol=0, atol=1e-5)
    assert (final / "adapter" / "adapter_config.json").is_file()
    assert main(["export", "--merge", str(final), str(tmp_path / "merged2")]) == 0
    torch.testing.assert_close(
        _logits(AutoModelForCausalLM.from_pretrained(tmp_path / "merged2"), ids),
        _logits(plain, ids), rtol=0, atol=1e-5)


def test_export_of_a_dir_without_adapter_exits_2(tiny_model_dir, tmp_path, capsys):
    assert main(["export", "--merge", tiny_model_dir, str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "no LoRA adapter (adapter_config.json)" in err and len(err.splitlines()) == 1


def test_resume_with_lora_is_exact(tiny_model_dir, tmp_path):
    """Dropout is on, so the restored RNG matters as much as the adapter and Adam state."""
    first = _learner(tiny_model_dir)
    for seed in range(2):
        _step(first, seed)
    ckpt = first.save_checkpoint(tmp_path / "ckpt", extra_state={"cursor": 2})
    for seed in (2, 3):
        _step(first, seed)
    expected = first.adapter_for_sync()[0]
    second = _learner(tiny_model_dir)
    assert second.load_checkpoint(ckpt) == {"cursor": 2}
    for seed in (2, 3):
        _step(second, seed)
    got = second.adapter_for_sync()[0]
    assert got.keys() == expected.keys()
    for name, value in expected.items():
        assert torch.equal(got[name], value), name
    with pytest.raises(AssertionError):  # without the checkpoint the weights differ
        third = _learner(tiny_model_dir)
        for seed in (2, 3):
            _step(third, seed)
        torch.testing.assert_close(third.adapter_for_sync()[0], expected)
