"""rlsys: a distributed actor-learner service for post-training LLMs.

Importing ``rlsys`` is cheap: it pulls in none of ray, vllm or deepspeed (those load lazily in
the adapters that need them).
"""

__version__ = "0.1.0"
