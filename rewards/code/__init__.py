"""Code-execution reward: run candidate programs against tests in a bubblewrap sandbox.

Public API: ``run_tests(program, tests, timeout_s, memory_mb, stdin_cases) -> SandboxResult``,
``SandboxPool`` (concurrent runs), and ``CodeReward`` in ``rewards.code.reward``.

Threat model. The candidate program is hostile: it may run any code as the sandbox user
(exit early, kill, fork, patch builtins, read memory, forge output). The tests are trusted
(they come with the data set). The guarantee: ``passed`` is True only if every assertion of the
tests held when evaluated by trusted code on plain data returned by the candidate, and every
top-level statement of the tests completed. How:

* Two sandboxes, no shared process: the *candidate* sandbox loads the program and answers
  calls; the *judge* sandbox (separate pid/ipc/net/user namespaces and host uid, so the
  candidate can neither see, signal, ptrace nor open the judge's fds) runs the tests.
  Calls and answers cross two pipes as JSON of exact builtin types; any other object stays in
  the candidate and is a reference proxy in the judge whose truth value is an error and whose
  ``==`` is identity. A lying ``__eq__``, patched ``builtins``/``AssertionError``,
  ``sys.excepthook``, ``atexit``, ``os._exit(0)``, signals or a forked child all live only in
  the candidate's process and cannot touch the judge's evaluation.
* The host rewrites each ``assert`` of the tests (``ast``) into an explicit counted check, so
  ``-O`` cannot strip them; the judge refuses ``-O`` anyway. The judge writes its report to a
  pipe only the host holds; the host requires the report, every statement completed, no failure
  and >= 1 assertion held. The candidate's stdout, stderr and exit code never decide "passed".
* stdin/stdout cases: the expected output never enters the sandbox; the host compares.

What a candidate object may answer (the rule; ``_judge.RemoteRef``). A value that is not plain
data stays in the candidate and answers only *data queries*, whose reply is plain data the judge
then inspects: a call, a non-dunder attribute read, ``len()``, ``obj[key]``, iteration (the
object becomes a list). Every *predicate* and conversion is decided by the judge without
asking the candidate: truth value (an error), ``==``/``!=`` (proxy identity), ``in`` (plain
``==`` membership in the list the object iterates to, never its ``__contains__``), ordering,
hashing (by identity), arithmetic, ``int``/``float``/``round``/``abs``/``__index__``, ``str``
and ``format`` (a fixed placeholder) and ``type``/``isinstance``/``__class__`` (the proxy
class). So a universal answer ("contains everything", "equals everything") has nothing to hook.

Candidate exceptions. An exception raised by the candidate is raised into the tests as its
builtin type (so ``except ValueError`` in the tests works; non-builtin and BaseException types
become ``RemoteError``), and recorded. It fails the statement unless an ``except`` clause of the
tests themselves handles it (``rewrite`` marks every clause): swallowed anywhere else (a
``map``/``filter``/``zip``/``next(it, default)`` ending on StopIteration, ``hasattr``/
``getattr(obj, name, default)`` on AttributeError, any library code) it would
steer the tests' control flow, so the statement fails whatever the type. Two replies are
answers, not errors: AttributeError of an attribute read ("absent") and TypeError of ``len()``
("no length"). A tests' bare ``except:`` cannot swallow a failed assert either.

Not defended: tests that take helpers from the candidate (names the tests use but never
define are looked up in the candidate, so such helpers are as trustworthy as the candidate).
Limitations: arguments are passed by value (tests that inspect in-place mutation of an argument
fail), callables cannot be passed to the candidate, only the standard library exists inside;
without a delegated cgroup, a program may run at most ``Limits.processes`` (4) tasks,
threads included, each with about a quarter of ``memory_mb`` (the judge runs in one process).

Isolation details and rlimits: see ``rewards.code.sandbox``. ``RLIMIT_NPROC`` is not enforced
for a root caller even in a user namespace (uid 65534 maps to host root), so bwrap itself runs
under a fresh non-root uid per sandbox; then a fork bomb stops at the limit.
Memory: ``memory_mb`` is the total of one sandbox (every process, ``/tmp`` and ``/dev/shm``
together), split by ``sandbox.budget``; memory that no limit counts (memfd, System V shm) is
refused by ``seccomp``.

Two paths, same verdicts. ``run_tests`` starts one bwrap sandbox per execution (candidate,
judge, each stdin case) and leaves nothing running when it returns. ``SandboxPool`` (the reward
path) keeps, per worker, two warm fork servers (``forkserver``: one sandbox for candidates,
another for judges) and makes every execution a fresh fork in new pid/mount/IPC/network
namespaces with its own tmpfs, ``/proc``, rlimits and no capability; nothing of an execution
(files, globals, processes, keys) reaches the next, and the servers end with the pool. Without
the per-execution bwrap and interpreter start it runs several times more executions per CPU
second (BENCHMARKS.md, "code").
"""

from rewards.code.runner import STATUSES, SandboxPool, SandboxResult, run_tests

__all__ = ["STATUSES", "SandboxPool", "SandboxResult", "run_tests"]
