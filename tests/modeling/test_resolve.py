"""resolve_model: paths, short names, deterministic tiny models, locking, and the SmolLM2 build."""

from __future__ import annotations

import multiprocessing as mp
import os

import pytest
import torch
from safetensors.torch import load_file

from rlsys.modeling import (
    MODELS,
    ModelSpec,
    load_causal_lm,
    load_tokenizer,
    random_llama_dir,
    resolve_model,
)


def test_local_dir_returned_as_is(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    assert resolve_model(str(tmp_path)) == str(tmp_path)


def test_local_dir_without_config_names_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        resolve_model(str(tmp_path))


def test_missing_path_named(tmp_path):
    missing = str(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="nope"):
        resolve_model(missing)


def test_unknown_name_lists_known_names():
    with pytest.raises(ValueError) as err:
        resolve_model("gpt-17")
    for name in ("smollm2", "smollm2-135m-instruct", "tiny-llama"):
        assert name in str(err.value)


def test_tiny_llama_deterministic_per_seed(cache_dir, tmp_path):
    path_a = resolve_model("tiny-llama:7", cache_dir)
    other_cache = tmp_path / "other"
    os.makedirs(other_cache)
    os.symlink(os.path.join(cache_dir, "smollm2-tokenizer"), other_cache / "smollm2-tokenizer")
    path_b = resolve_model("tiny-llama:7", str(other_cache))
    path_c = resolve_model("tiny-llama:8", cache_dir)
    assert path_a != path_b
    weights_a = load_file(os.path.join(path_a, "model.safetensors"))
    weights_b = load_file(os.path.join(path_b, "model.safetensors"))
    weights_c = load_file(os.path.join(path_c, "model.safetensors"))
    assert weights_a.keys() == weights_b.keys()
    for name, tensor in weights_a.items():
        assert torch.equal(tensor, weights_b[name]), name
    assert not torch.equal(
        weights_a["model.layers.0.self_attn.q_proj.weight"],
        weights_c["model.layers.0.self_attn.q_proj.weight"],
    )
    # Cached: a second call returns the same directory without rebuilding.
    mtime = os.path.getmtime(os.path.join(path_a, "model.safetensors"))
    assert resolve_model("tiny-llama:7", cache_dir) == path_a
    assert os.path.getmtime(os.path.join(path_a, "model.safetensors")) == mtime


def test_tiny_llama_loads_with_chat_template_and_pad(cache_dir):
    path = resolve_model("tiny-llama", cache_dir)
    tokenizer = load_tokenizer(path)
    model = load_causal_lm(path)
    assert tokenizer.chat_template
    assert tokenizer.pad_token is not None
    assert model.config.vocab_size == len(tokenizer)
    ids = tokenizer("hello world", return_tensors="pt").input_ids
    logits = model(ids).logits
    assert logits.shape == (1, ids.shape[1], len(tokenizer))
    assert torch.isfinite(logits).all()


def test_random_llama_dir_custom_shape(cache_dir):
    from transformers import AutoConfig

    path = random_llama_dir("llama-96x3", seed=1, cache_dir=cache_dir, hidden_size=96,
                            num_hidden_layers=3)
    config = AutoConfig.from_pretrained(path)
    assert (config.hidden_size, config.num_hidden_layers, config.num_key_value_heads) == (96, 3, 2)
    assert os.path.isfile(os.path.join(path, "tokenizer.json"))


def _count_build(out_dir: str, arg: str | None, cache_dir: str) -> None:
    # Appends one line per build; sleeps so that concurrent callers overlap.
    import time

    with open(os.path.join(cache_dir, "builds.log"), "a") as log:
        log.write(f"{os.getpid()}\n")
    time.sleep(0.5)
    with open(os.path.join(out_dir, "config.json"), "w") as cfg:
        cfg.write("{}")


def _resolve_in_child(cache_dir: str, queue) -> None:
    queue.put(resolve_model("counted", cache_dir))


def test_concurrent_callers_build_once(tmp_path):
    cache = str(tmp_path)
    spec = ModelSpec("counted", _count_build, "test model")
    with MODELS.override("counted", spec):
        ctx = mp.get_context("fork")
        queue = ctx.Queue()
        procs = [ctx.Process(target=_resolve_in_child, args=(cache, queue)) for _ in range(3)]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join(timeout=30)
        results = {queue.get(timeout=5) for _ in procs}
    assert results == {os.path.join(cache, "counted")}
    assert len((tmp_path / "builds.log").read_text().splitlines()) == 1
    assert os.path.isfile(os.path.join(cache, "counted", "config.json"))
    assert not [n for n in os.listdir(cache) if ".tmp-" in n]


def _failing_build(out_dir: str, arg: str | None, cache_dir: str) -> None:
    with open(os.path.join(out_dir, "config.json"), "w") as cfg:
        cfg.write("{}")
    raise RuntimeError("boom")


def test_failed_build_leaves_no_entry(tmp_path):
    with MODELS.override("broken", ModelSpec("broken", _failing_build, "fails")):
        with pytest.raises(RuntimeError, match="boom"):
            resolve_model("broken", str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == [".locks"]


@pytest.mark.slow
def test_smollm2_conversion_generates_deterministically(tmp_path):
    from transformers import AutoModelForCausalLM

    path = resolve_model("smollm2", str(tmp_path))
    assert path == resolve_model("smollm2-135m-instruct", str(tmp_path))
    model = AutoModelForCausalLM.from_pretrained(path)
    assert model.dtype == torch.float32
    assert not hasattr(model.config, "quantization_config")
    tokenizer = load_tokenizer(path)
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    outs = [
        model.generate(ids, max_new_tokens=12, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        for _ in range(2)
    ]
    assert torch.equal(outs[0], outs[1])
    text = tokenizer.decode(outs[0][0, ids.shape[1]:], skip_special_tokens=True)
    assert "Paris" in text, text
