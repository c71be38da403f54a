"""The stage loops (supervised, RL, eval, synthetic data), Ray bootstrap and run management.

Floor 3: this package wires ``actors``, ``learner``, ``rewards`` and ``rlsys.data`` together.
Importing it does not start Ray; ``runner.run_recipe`` does.
"""
