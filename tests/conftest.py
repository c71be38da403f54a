"""Fixtures shared by the whole suite: one torch thread per test process, one local Ray cluster
per session (reused by every test that needs Ray), and the cached random tiny Llama."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    # Two cores shared by Ray actors and the test process: one thread each (ENVIRONMENT.md).
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray cluster for the session (reused if the process already has one).

    Four logical CPUs on two cores: a learner rank, a rollout worker and a reward worker may be
    alive at once in a test; the OS time-shares them.
    """
    import ray

    started = False
    if not ray.is_initialized():
        ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
        started = True
    yield ray
    if started:
        ray.shutdown()


@pytest.fixture(scope="session")
def tiny_model_dir() -> str:
    """``tiny-llama`` (2 layers, hidden 64, SmolLM2 tokenizer), built once into the model cache."""
    from rlsys.modeling import resolve_model

    return resolve_model("tiny-llama")
