"""The ``merge`` stage: merge Hugging Face checkpoints of one architecture (linear, task
arithmetic, TIES, SLERP) into the stage's output model, e.g. a CPT model back with the instruct
model it started from, to recover instruction following.

Model references: ``input`` (the model the stage receives, i.e. the previous stage's output),
``base`` (the recipe's ``model.path``), ``stage:NAME`` (an earlier stage's final model) or an
HF directory / short model name. Weights are read from ``model*.safetensors`` and merged tensor
by tensor with ``rlsys.algo.merge``; the output directory takes every other file (config,
tokenizer, generation config) from the first model. Runs in the driver, without Ray or a
learner; it does not evaluate (use ``eval_before`` / ``eval_after``).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from rlsys.data.sources import DataError


def resolve_model_ref(ctx: Any, ref: str, input_path: str, field: str) -> str:
    """The local HF directory a model reference names (see the module docstring); ``field``
    names the recipe field in errors."""
    if ref == "input":
        return input_path
    if ref == "base":
        return ctx.base_model_path()
    if ref.startswith("stage:"):
        name = ref.removeprefix("stage:")
        final = ctx.run_dir / "stages" / name / "final"
        if not (final / "config.json").is_file():
            raise FileNotFoundError(f"{field}: stage {name!r} has no final model at {final} "
                                    "(it must be an earlier stage of this recipe)")
        return str(final)
    from rlsys.modeling import resolve_model

    return resolve_model(ref)


def load_weights(model_dir: str) -> dict[str, torch.Tensor]:
    """Every tensor of ``model_dir/model*.safetensors`` (one file or HF shards)."""
    from safetensors.torch import load_file

    files = sorted(Path(model_dir).glob("model*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no model*.safetensors weights in {model_dir}")
    state: dict[str, torch.Tensor] = {}
    for f in files:
        state.update(load_file(str(f)))
    return state


def merge_state_dicts(
    states: dict[str, dict[str, torch.Tensor]],
    *,
    method: str,
    weights: list[float],
    base: dict[str, torch.Tensor] | None = None,
    t: float = 0.5,
    density: float = 1.0,
    scale: float = 1.0,
) -> dict[str, torch.Tensor]:
    """Merge the state dicts (label -> state, in order) tensor by tensor with
    ``MERGE_METHODS[method]``; a ``DataError`` names the first tensor whose shape differs (or
    that one model lacks). Integer tensors (buffers) are taken from the first model."""
    from rlsys.algo.merge import MERGE_METHODS, check_compatible

    merge = MERGE_METHODS.get(method)
    everything = dict(states)
    if base is not None:
        everything["the base model"] = base
    try:
        check_compatible(everything)
    except ValueError as err:
        raise DataError(f"merge: checkpoints do not match: {err}") from None
    labels = list(states)
    out: dict[str, torch.Tensor] = {}
    for name, first in states[labels[0]].items():
        if not first.is_floating_point():
            out[name] = first.clone()
            continue
        out[name] = merge([states[label][name] for label in labels], weights=weights,
                          base=None if base is None else base[name], t=t, density=density,
                          scale=scale).contiguous()
    return out


def save_merged(state: dict[str, torch.Tensor], template_dir: str, out_dir: Path) -> None:
    """Write ``state`` as ``model.safetensors`` plus the non-weight files of ``template_dir``
    into ``out_dir``, atomically (a temp dir renamed into place)."""
    from safetensors.torch import save_file

    tmp = out_dir.with_name(out_dir.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for f in Path(template_dir).iterdir():
        weights = f.suffix in (".safetensors", ".bin") or f.name.endswith(".index.json")
        if f.is_file() and not weights and f.name != "trainer_state.json":
            shutil.copy2(f, tmp / f.name)
    save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    if out_dir.exists():
        shutil.rmtree(out_dir)
    os.replace(tmp, out_dir)


def run_merge_stage(ctx: Any, stage: Any, model_path: str) -> dict[str, Any]:
    """``merge``: resolve the models, merge their weights, save ``stages/NAME/final``."""
    mc = stage.merge
    t0 = time.monotonic()
    paths = [resolve_model_ref(ctx, m.path, model_path, f"stages.{stage.name}.merge.models.{i}")
             for i, m in enumerate(mc.models)]
    states = {f"models[{i}] ({p})": load_weights(p) for i, p in enumerate(paths)}
    base = None
    if mc.base is not None:
        base = load_weights(resolve_model_ref(ctx, mc.base, model_path,
                                              f"stages.{stage.name}.merge.base"))
    merged = merge_state_dicts(states, method=mc.method, weights=[m.weight for m in mc.models],
                               base=base, t=mc.t, density=mc.density, scale=mc.scale)
    final = ctx.stage_dir(stage.name) / "final"
    save_merged(merged, paths[0], final)
    print(f"[{stage.name}] {mc.method} merge of {len(paths)} model(s) -> {final} "
          f"({time.monotonic() - t0:.1f}s)", flush=True)
    return {"checkpoint": str(final), "method": mc.method, "models": paths}
