"""The checker worker process: ``python -m rewards.math.worker``.

Reads one JSON ``[pred, gold]`` per line on stdin and answers ``1`` or ``0`` per line on stdout
(after a first ``ready`` line once sympy is imported). It limits its own address space so a
memory bomb fails here, not in the parent. It has no timeout of its own: ``pool.py`` kills it.
"""

from __future__ import annotations

import json
import sys

WORKER_MEMORY_BYTES = 2 * 1024**3


def main() -> None:
    """Serve comparisons until stdin closes; never raises on bad input."""
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (WORKER_MEMORY_BYTES, WORKER_MEMORY_BYTES))
    except (ImportError, ValueError, OSError):
        pass
    from rewards.math.compare import equivalent

    out = sys.stdout
    out.write("ready\n")
    out.flush()
    for line in sys.stdin:
        try:
            pred, gold = json.loads(line)
            verdict = bool(equivalent(str(pred), str(gold)))
        except Exception:  # noqa: BLE001 - model text must never crash the worker
            verdict = False
        out.write("1\n" if verdict else "0\n")
        out.flush()


if __name__ == "__main__":
    main()
