"""Fixtures for learner tests: the cached random tiny Llama and one shared Ray cluster."""

from __future__ import annotations

import pytest
import torch

from rlsys.modeling import resolve_model


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_model_dir() -> str:
    """``tiny-llama`` (2 layers, hidden 64, SmolLM2 tokenizer), built once into the model cache."""
    return resolve_model("tiny-llama")


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray cluster for the session (reused if the process already has one)."""
    import ray

    started = False
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        started = True
    yield ray
    if started:
        ray.shutdown()
