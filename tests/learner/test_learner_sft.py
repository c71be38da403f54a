"""Single-rank in-process Learner (gloo, world_size 1, tiny Llama): SFT, gradient
accumulation, checkpoints (HF loadability, exact resume, crash safety)."""

from __future__ import annotations

import pytest
import torch

from learner.checkpoint import latest_checkpoint, read_trainer_state
from learner.learner import Learner
from rlsys.algo import token_logprobs
from tests.learner.batches import random_rows, token_batch


def _learner(model_dir: str, **overrides) -> Learner:
    kwargs = {"model_path": model_dir, "lr": 1e-2, "grad_clip": 1.0, "seed": 0}
    return Learner(**{**kwargs, **overrides})


def _num_tokens(*batches) -> int:
    return sum(int(b.mask.sum()) for b in batches)


def _params(learner: Learner) -> dict[str, torch.Tensor]:
    return learner.state_dict_for_sync()


def test_sft_loss_falls_on_a_memorisable_batch(tiny_model_dir):
    learner = _learner(tiny_model_dir)
    batch = token_batch(random_rows(2, 12, seed=0))
    losses = [learner.train_sft([batch], num_tokens=_num_tokens(batch))["loss"] for _ in range(10)]
    assert losses[-1] < 0.5 * losses[0], losses
    assert learner.step == 10


def test_micro_batches_reproduce_the_full_batch_step(tiny_model_dir):
    """2 micro-batches with global normalisers == one full batch: same loss, grad norm and
    parameters after the step (the accumulation must neither average nor double-divide;
    gradient checkpointing on the split side must not change anything either)."""
    rows = random_rows(4, 10, seed=1)
    full, first, second = token_batch(rows), token_batch(rows[:2]), token_batch(rows[2:])
    kwargs = {"aggregation": "seq_mean_token_mean", "num_tokens": _num_tokens(full), "num_seqs": 4}
    opts = {"lr": 1e-3, "eps": 1e-3, "grad_clip": 0.0}  # large eps: Adam's step tracks the grad
    whole = _learner(tiny_model_dir, **opts)
    split = _learner(tiny_model_dir, gradient_checkpointing=True, **opts)
    metrics_whole = whole.train_sft([full], **kwargs)
    metrics_split = split.train_sft([first, second], **kwargs)
    assert metrics_split["loss"] == pytest.approx(metrics_whole["loss"], rel=1e-5)
    assert metrics_split["grad_norm"] == pytest.approx(metrics_whole["grad_norm"], rel=1e-4)
    assert metrics_whole["grad_norm"] > 0
    for name, value in _params(whole).items():
        torch.testing.assert_close(_params(split)[name], value, rtol=0, atol=1e-6)


def test_checkpoint_is_a_plain_hf_directory(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    learner = _learner(tiny_model_dir)
    batch = token_batch(random_rows(2, 8, seed=2))
    learner.train_sft([batch], num_tokens=_num_tokens(batch))
    path = learner.save_checkpoint(tmp_path / "ckpt", extra_state={"sampler": {"index": 5}})
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    assert AutoTokenizer.from_pretrained(path).vocab_size > 0
    with torch.no_grad():
        logits = model(input_ids=batch.input_ids).logits  # right padding: causal is enough
    expected = torch.where(batch.mask, token_logprobs(logits, batch.input_ids), 0)
    torch.testing.assert_close(learner.forward_logprobs(batch), expected, rtol=0, atol=1e-5)
    assert read_trainer_state(path)["extra_state"] == {"sampler": {"index": 5}}


def test_weights_only_save_loads_in_hf_but_refuses_resume(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    learner = _learner(tiny_model_dir)
    batch = token_batch(random_rows(2, 8, seed=2))
    learner.train_sft([batch], num_tokens=_num_tokens(batch))
    full = learner.save_checkpoint(tmp_path / "full")
    slim = learner.save_checkpoint(tmp_path / "final", extra_state={"step": 1},
                                   training_state=False)
    assert (full / "training_state" / "deepspeed").is_dir()
    assert sorted(p.name for p in (slim / "training_state").iterdir()) == ["trainer_state.json"]
    state = read_trainer_state(slim)
    assert state["training_state"] is False and state["extra_state"] == {"step": 1}
    size = sum(f.stat().st_size for f in slim.rglob("*") if f.is_file())
    assert size < 0.5 * sum(f.stat().st_size for f in full.rglob("*") if f.is_file())
    model = AutoModelForCausalLM.from_pretrained(slim, dtype=torch.float32)
    for name, value in _params(learner).items():
        torch.testing.assert_close(model.state_dict()[name], value, rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"final\b.*weights only.*ckpt/step_N"):
        learner.load_checkpoint(slim)
    assert learner.load_checkpoint(full) == {}


def test_resume_continues_exactly(tiny_model_dir, tmp_path):
    """save after 2 steps, load into a fresh learner: step 3 equals the uninterrupted step 3
    (needs the Adam moments, the warmup LR position and the step counter)."""
    opts = {
        "lr": 1e-3,
        "schedule": "cosine",
        "total_steps": 6,
        "schedule_kwargs": {"warmup_steps": 2},
    }
    batches = [token_batch(random_rows(2, 8, seed=s)) for s in range(3)]
    original = _learner(tiny_model_dir, **opts)
    for b in batches[:2]:
        original.train_sft([b], num_tokens=_num_tokens(b))
    original.save_checkpoint(tmp_path / "ckpt", extra_state={"epoch": 1})
    expected = original.train_sft([batches[2]], num_tokens=_num_tokens(batches[2]))

    resumed = _learner(tiny_model_dir, **opts)
    assert resumed.load_checkpoint(tmp_path / "ckpt") == {"epoch": 1}
    assert resumed.step == 2
    got = resumed.train_sft([batches[2]], num_tokens=_num_tokens(batches[2]))
    assert got["lr"] == expected["lr"] > 0
    assert got["loss"] == pytest.approx(expected["loss"], abs=1e-6)
    for name, value in _params(original).items():
        torch.testing.assert_close(_params(resumed)[name], value, rtol=0, atol=1e-6)


def test_crash_during_save_keeps_last_good_checkpoint(tiny_model_dir, tmp_path, monkeypatch):
    learner = _learner(tiny_model_dir)
    batch = token_batch(random_rows(2, 8, seed=3))
    learner.train_sft([batch], num_tokens=_num_tokens(batch))
    run_dir = tmp_path / "run"
    good = learner.save_checkpoint(run_dir / "checkpoints" / "step_00000001")
    good_params = _params(learner)
    learner.train_sft([batch], num_tokens=_num_tokens(batch))

    def crash(*args, **kwargs):  # the HF files are written by now; the engine state is not
        raise OSError("simulated crash while writing the optimizer state")

    monkeypatch.setattr(learner._engine, "save_checkpoint", crash)
    with pytest.raises(OSError, match="simulated crash"):
        learner.save_checkpoint(good)  # overwrite the good one in place
    with pytest.raises(OSError, match="simulated crash"):
        learner.save_checkpoint(run_dir / "checkpoints" / "step_00000002")
    monkeypatch.undo()

    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["step_00000001"]
    assert latest_checkpoint(run_dir) == good
    assert read_trainer_state(good)["step"] == 1
    learner.load_checkpoint(good)
    assert learner.step == 1
    for name, value in good_params.items():
        torch.testing.assert_close(_params(learner)[name], value, rtol=0, atol=0)


def test_bfloat16_training_runs(tiny_model_dir):
    learner = _learner(tiny_model_dir, dtype="bfloat16", lr=1e-2)
    batch = token_batch(random_rows(2, 8, seed=4))
    losses = [learner.train_sft([batch], num_tokens=_num_tokens(batch))["loss"] for _ in range(3)]
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0], losses
    weights = learner.state_dict_for_sync()
    assert weights["model.embed_tokens.weight"].dtype == torch.bfloat16
    as_float = learner.state_dict_for_sync("float32")
    assert all(v.dtype == torch.float32 for v in as_float.values())
