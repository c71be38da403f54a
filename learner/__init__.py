"""The learner: DeepSpeed-backed training ranks for policies and critics.

* ``learner.learner.Learner`` — one plain (Ray-free) rank: SFT/CPT, DPO, policy-gradient and
  value steps, weight gathering for rollout sync, atomic checkpoints.
* ``learner.launch`` — ``LearnerGroup`` (Ray actors, one per rank) and ``InProcessLearnerGroup``.
* ``learner.schedules`` — LR schedules (pure), ``learner.checkpoint`` — atomic directories,
  ``learner.critic`` — the value-head model, ``learner.losses`` — loss closures over
  ``rlsys.algo``.

Importing the package is cheap: DeepSpeed and Ray load only with ``learner.learner`` /
``learner.launch``.
"""
