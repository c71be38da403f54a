"""Rollout and reward actors: engines, plain worker classes, weight sync and Ray pools.

``actors.engines`` (HF / vLLM rollout engines), ``actors.rollout.RolloutWorker``,
``actors.reward_worker.RewardWorker`` and ``actors.weight_sync`` are plain Python; only
``actors.launch`` imports Ray and wraps the workers with ``ray.remote``. Importing this package
imports nothing heavy (no torch, Ray or vLLM).
"""
