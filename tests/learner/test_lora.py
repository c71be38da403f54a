"""LoRA in the learner (one in-process rank, tiny Llama, real peft + DeepSpeed): B=0 adapters
reproduce the base model, gradients reach adapter parameters only, the merged weights equal the
adapter model, the adapter-disabled reference equals an explicit frozen copy (log-probs and a
DPO step), and bad ``target_modules`` fail with the modules the model has."""

from __future__ import annotations

import pytest
import torch

from learner.launch import free_port
from learner.learner import Learner
from learner.lora import check_lora_for_model
from rlsys.algo import token_logprobs
from rlsys.config import RecipeError
from rlsys.controller.learners import check_lora
from rlsys.errors import UserError
from tests.learner.batches import random_rows, token_batch

LORA = {"r": 4, "alpha": 8.0, "dropout": 0.0, "target_modules": ["q_proj", "v_proj", "down_proj"],
        "modules_to_save": []}


def _learner(model_dir: str, **overrides) -> Learner:
    kwargs = {"model_path": model_dir, "lr": 1e-2, "grad_clip": 0.0, "seed": 0,
              "master_port": free_port()}  # other suites may hold the default port
    return Learner(**{**kwargs, **overrides})


def _train(learner: Learner, steps: int = 3, seed: int = 0) -> None:
    batch = token_batch(random_rows(2, 12, seed=seed))
    for _ in range(steps):
        learner.train_sft([batch], num_tokens=int(batch.mask.sum()))


def _hf_logprobs(model_dir_or_model, batch) -> torch.Tensor:
    from transformers import AutoModelForCausalLM

    model = model_dir_or_model
    if isinstance(model, str):
        model = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32)
    with torch.no_grad():
        logits = model.eval()(input_ids=batch.input_ids).logits  # right padding: causal enough
    return torch.where(batch.mask, token_logprobs(logits, batch.input_ids), 0)


def test_fresh_adapters_reproduce_the_base_model(tiny_model_dir):
    """peft starts B at 0, so B @ A = 0: the wrapped model's log-probs are the base model's."""
    batch = token_batch(random_rows(3, 10, seed=1))
    lora = _learner(tiny_model_dir, lora=LORA)
    assert lora.info()["lora"] is True
    torch.testing.assert_close(lora.forward_logprobs(batch), _hf_logprobs(tiny_model_dir, batch),
                               rtol=0, atol=1e-5)


def test_gradients_reach_adapter_parameters_only(tiny_model_dir):
    learner = _learner(tiny_model_dir, lora={**LORA, "modules_to_save": ["lm_head"]})
    module = learner._engine.module
    trainable = {n for n, p in module.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_A." in n or ".lora_B." in n or ".modules_to_save." in n
                             for n in trainable), trainable
    before = {n: p.detach().clone() for n, p in module.named_parameters()}
    _train(learner, steps=1)
    changed = {n for n, p in module.named_parameters() if not torch.equal(p, before[n])}
    # lora_A of a step-1 adapter gets no gradient (B = 0), so only B and the saved head move.
    assert changed and changed <= trainable
    assert any(".lora_B." in n for n in changed) and any("modules_to_save" in n for n in changed)


def test_merged_weights_equal_the_adapter_model(tiny_model_dir):
    """``state_dict_for_sync`` of a trained LoRA learner is the merged model (HF names): loaded
    into a plain Llama it gives the adapter model's log-probs (fp32, atol 1e-5)."""
    from transformers import AutoModelForCausalLM

    learner = _learner(tiny_model_dir, lora=LORA)
    _train(learner)
    batch = token_batch(random_rows(3, 10, seed=2))
    merged = learner.state_dict_for_sync()
    plain = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    missing, unexpected = plain.load_state_dict(merged, strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}  # tied to embed_tokens
    adapted = learner.forward_logprobs(batch)
    assert (adapted - _hf_logprobs(tiny_model_dir, batch)).abs().max() > 1e-3  # it did train
    torch.testing.assert_close(_hf_logprobs(plain, batch), adapted, rtol=0, atol=1e-5)


def test_adapter_disabled_reference_is_the_starting_model(tiny_model_dir):
    learner = _learner(tiny_model_dir, lora=LORA)
    _train(learner)
    batch = token_batch(random_rows(3, 10, seed=3), prompt_lens=[4, 3, 5])
    frozen = _learner(tiny_model_dir)  # the explicit frozen copy the reference replaces
    torch.testing.assert_close(learner.forward_ref_logprobs(batch),
                               frozen.forward_logprobs(batch), rtol=0, atol=1e-5)
    torch.testing.assert_close(learner.forward_ref_sequence_logps(batch),
                               frozen.forward_sequence_logps(batch), rtol=0, atol=1e-4)
    with pytest.raises(RuntimeError, match="forward_ref_logprobs needs LoRA"):
        frozen.forward_ref_logprobs(batch)


def test_dpo_with_the_disabled_adapter_reference_equals_an_explicit_frozen_copy(tiny_model_dir):
    chosen = token_batch(random_rows(2, 10, seed=4), prompt_lens=[4, 4])
    rejected = token_batch(random_rows(2, 10, seed=5), prompt_lens=[4, 4])
    frozen = _learner(tiny_model_dir)
    results = []
    for explicit in (False, True):
        learner = _learner(tiny_model_dir, lora=LORA)
        _train(learner, steps=2)  # adapters non-zero, so policy != reference
        gap = learner.forward_sequence_logps(chosen) - frozen.forward_sequence_logps(chosen)
        assert gap.abs().max() > 0.01
        steps = []
        for _ in range(2):
            if explicit:
                ref = [frozen.forward_sequence_logps(b) for b in (chosen, rejected)]
            else:
                ref = [learner.forward_ref_sequence_logps(b) for b in (chosen, rejected)]
            steps.append(learner.train_dpo([(chosen, rejected, *ref)], beta=1.0, num_pairs=2))
        results.append((steps, learner.state_dict_for_sync()))
    (steps_a, state_a), (steps_b, state_b) = results
    for a, b in zip(steps_a, steps_b, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5, abs=1e-6)
    for name, value in state_a.items():
        torch.testing.assert_close(state_b[name], value, rtol=0, atol=1e-6)


def test_unknown_target_modules_list_the_modules_the_model_has(tiny_model_dir):
    bad = {**LORA, "target_modules": ["q_proj", "c_attn"]}
    with pytest.raises(ValueError, match=r"\['c_attn'\] not found in LlamaForCausalLM.*"
                                         r"'down_proj'.*'q_proj'"):
        check_lora_for_model(tiny_model_dir, bad)
    with pytest.raises(ValueError, match=r"\['c_attn'\] not found"):
        _learner(tiny_model_dir, lora=bad)
    with pytest.raises(RecipeError, match=r"model.lora .*\['c_attn'\] not found") as info:
        check_lora(tiny_model_dir, bad)  # the controller's check: a user error, exit 2
    assert isinstance(info.value, UserError)


def test_a_layer_type_peft_cannot_wrap_names_the_model(tiny_model_dir):
    with pytest.raises(ValueError, match=r"peft cannot add LoRA adapters to LlamaForCausalLM "
                                         r"\(model_type 'llama'\).*input_layernorm"):
        check_lora_for_model(tiny_model_dir, {**LORA, "target_modules": ["input_layernorm"]})


def test_a_lora_critic_trains_adapters_and_its_head_and_saves_merged(tiny_model_dir, tmp_path):
    from learner.critic import load_critic
    from rlsys.data.attention import packed_forward
    from tests.learner.batches import experience

    critic = _learner(tiny_model_dir, value_head=True, lora=LORA)
    trainable = {n for n, p in critic._engine.module.named_parameters() if p.requires_grad}
    assert any("value_head.modules_to_save" in n for n in trainable)
    assert all(".lora_" in n or "value_head.modules_to_save" in n for n in trainable), trainable
    tokens = token_batch(random_rows(2, 10, seed=6), prompt_lens=[4, 4])
    batch = experience(tokens, advantages=[0.0, 0.0])
    batch.returns = torch.where(tokens.mask, 1.0, 0.0)
    losses = []
    for _ in range(4):
        batch.values = critic.forward_values(tokens)
        losses.append(critic.train_value([batch], clip=10.0,
                                         num_tokens=int(tokens.mask.sum()))["loss"])
    assert losses[-1] < 0.5 * losses[0], losses
    final = critic.save_checkpoint(tmp_path / "critic", training_state=False)
    reloaded = load_critic(str(final), torch.float32).eval()
    with torch.no_grad():
        head = packed_forward(reloaded, tokens)[..., 0]
    values = torch.where(tokens.mask, torch.cat([torch.zeros(2, 1), head[:, :-1]], dim=1), 0)
    torch.testing.assert_close(values, critic.forward_values(tokens), rtol=0, atol=1e-5)
