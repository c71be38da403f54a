"""The bucketed weight broadcast of ``actors.collective`` on real gloo groups (members in
threads of this process): exact tensors at every bucket size -- a bucket smaller than one
element, tensors split across buckets, one bucket for all -- metadata with the first bucket,
bounded joins, and the ``rollout.weight_sync`` decision table."""

from __future__ import annotations

import threading

import pytest
import torch

from actors.collective import CollectiveError, GroupSpec, WeightGroup, receive_state, send_state
from actors.collective_sync import colocation, resolve_weight_sync


def _state() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return {
        "embed.weight": torch.randn(7, 5, generator=gen),  # 140 bytes
        "norm.bias": torch.randn(3, generator=gen).to(torch.bfloat16),  # 6 bytes: misaligns
        "scale": torch.tensor(2.5),  # 0-d
        "empty": torch.zeros(0),
        "head.weight": torch.randn(9, 4, generator=gen).double().t(),  # non-contiguous
        "mask": torch.tensor([True, False, True]),
        "idx": torch.arange(6, dtype=torch.int64).view(2, 3),
    }


def _broadcast(bucket_bytes: int, receivers: int = 2) -> tuple[dict, list[dict]]:
    host = WeightGroup.host("127.0.0.1", 1 + receivers, epoch=1, backend="gloo", timeout_s=30)
    results: list[dict] = [{} for _ in range(receivers)]
    errors: list[BaseException] = []

    def receive(rank: int) -> None:
        try:
            group = WeightGroup(host.spec, rank).join()
            for meta, tensors in receive_state(group):
                if meta is not None:
                    results[rank - 1]["__meta__"] = meta
                results[rank - 1].update((n, t.clone()) for n, t in tensors)
        except BaseException as exc:  # noqa: BLE001 - surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=receive, args=(r,)) for r in range(1, 1 + receivers)]
    for t in threads:
        t.start()
    host.join()
    stats = send_state(host, _state().items(), bucket_bytes=bucket_bytes,
                       meta={"version": 3, "lora": {"r": 4}})
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    return stats, results


@pytest.mark.parametrize("bucket_bytes", [1, 7, 64, 150, 1 << 20])
def test_every_bucket_size_delivers_exact_tensors(bucket_bytes):
    stats, results = _broadcast(bucket_bytes)
    state = _state()
    payload = sum(t.numel() * t.element_size() for t in state.values())
    assert stats["bytes"] == payload and stats["tensors"] == len(state)
    assert stats["buckets"] >= payload / bucket_bytes  # no bucket holds more than its size
    if bucket_bytes >= 1 << 20:
        assert stats["buckets"] == 1
    for got in results:
        assert got.pop("__meta__") == {"version": 3, "lora": {"r": 4}}
        assert list(got) == list(state)  # state-dict order kept
        for name, tensor in state.items():
            assert got[name].dtype == tensor.dtype and got[name].shape == tensor.shape, name
            assert torch.equal(got[name], tensor), name


def test_a_tensor_larger_than_the_bucket_is_reassembled():
    # embed.weight (140 bytes) spans three 64-byte buckets; it is whole on arrival
    _, results = _broadcast(64, receivers=1)
    assert torch.equal(results[0]["embed.weight"], _state()["embed.weight"])


def test_join_without_peers_times_out_naming_rank_and_phase():
    host = WeightGroup.host("127.0.0.1", 2, epoch=4, backend="gloo", timeout_s=1.5)
    with pytest.raises(CollectiveError, match=r"rank 0/2 \(epoch 4.*failed in join"):
        host.join()


def test_bad_group_arguments_are_refused():
    spec = GroupSpec("127.0.0.1", 1, world_size=2, epoch=1)
    with pytest.raises(ValueError, match="rank 2 outside world_size 2"):
        WeightGroup(spec, 2)
    with pytest.raises(ValueError, match="backend must be one of"):
        WeightGroup(GroupSpec("127.0.0.1", 1, 2, 1, backend="mpi"), 1)
    with pytest.raises(CollectiveError, match="before join"):
        WeightGroup(spec, 1).broadcast(torch.zeros(1), "send header")
    with pytest.raises(ValueError, match="bucket_bytes must be >= 1"):
        send_state(WeightGroup(spec, 0), [], bucket_bytes=0)


def test_weight_sync_modes_resolve_per_hardware():
    cpu = {"learner_gpus": 0.0, "rollout_gpus": 0.0}
    gpu = {"learner_gpus": 1.0, "rollout_gpus": 0.5}
    assert resolve_weight_sync("auto", pool_can_join=True, **cpu) == ("collective", "gloo")
    assert resolve_weight_sync("auto", pool_can_join=True, **gpu) == ("collective", "nccl")
    assert resolve_weight_sync("auto", pool_can_join=True, engine="vllm", **gpu) == \
        ("collective", "gloo")  # the vLLM actor receives (an adapter, async): host memory
    assert resolve_weight_sync("auto", pool_can_join=True, engine="vllm", into_engine=True,
                               **gpu) == ("collective", "nccl")  # the vLLM workers receive
    assert resolve_weight_sync("ipc", pool_can_join=True, engine="vllm", **gpu) == ("ipc", None)
    with pytest.raises(ValueError, match="weight_sync=ipc is synchronous"):
        resolve_weight_sync("ipc", pool_can_join=True, staged=True, **gpu)
    # auto sees colocation: every worker on rank 0's GPU -> CUDA IPC (sync) / gloo (async,
    # and whenever any worker shares rank 0's GPU: NCCL refuses two ranks on one device)
    assert resolve_weight_sync("auto", pool_can_join=True, colocated="all", **gpu) == \
        ("ipc", None)
    assert resolve_weight_sync("auto", pool_can_join=True, colocated="all", staged=True,
                               **gpu) == ("collective", "gloo")
    assert resolve_weight_sync("collective", pool_can_join=True, colocated="some", **gpu) == \
        ("collective", "gloo")
    assert resolve_weight_sync("auto", pool_can_join=True, colocated="all", **cpu) == \
        ("collective", "gloo")
    with pytest.raises(ValueError, match="colocated must be one of"):
        resolve_weight_sync("auto", pool_can_join=True, colocated="yes", **gpu)

    assert resolve_weight_sync("auto", pool_can_join=False, **gpu) == ("object_store", None)
    assert resolve_weight_sync("collective", pool_can_join=True, learner_gpus=1.0,
                               rollout_gpus=0.0) == ("collective", "gloo")
    assert resolve_weight_sync("object_store", pool_can_join=True, **cpu) == \
        ("object_store", None)
    with pytest.raises(ValueError, match="weight_sync=ipc needs .* this run is on CPU"):
        resolve_weight_sync("ipc", pool_can_join=True, **cpu)
    with pytest.raises(ValueError, match="weight_sync=collective needs a Ray RolloutPool"):
        resolve_weight_sync("collective", pool_can_join=False, **cpu)
    with pytest.raises(ValueError, match="must be one of"):
        resolve_weight_sync("rdma", pool_can_join=True, **cpu)


def test_colocation_compares_gpu_uuids():
    assert colocation("GPU-a", ["GPU-a", "GPU-a"]) == "all"
    assert colocation("GPU-a", ["GPU-a", "GPU-b"]) == "some"
    assert colocation("GPU-a", ["GPU-b", None]) == "none"
    assert colocation(None, [None]) == "none" and colocation("GPU-a", []) == "none"
