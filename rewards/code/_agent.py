"""Candidate agent: loads the candidate program and answers the judge's calls (in the sandbox).

Runs inside the candidate's own sandbox (the bootstrap installs ``_codec``). Everything here
is under the candidate's control once its code has run, so nothing it sends is trusted: the
judge only ever receives plain data (or reference numbers) and decides every verdict itself.
argv: program_fd call_fd reply_fd names_json.
"""

import json
import sys

from _codec import LineReader, decode, encode, read_all, send


def _agent_main():
    prog_fd, call_fd, reply_fd = (int(a) for a in sys.argv[1:4])
    wanted = json.loads(sys.argv[4])
    source = read_all(prog_fd)
    refs = []

    def to_ref(obj):
        refs.append(obj)
        return len(refs) - 1

    module = type(sys)("solution")
    module.__file__ = "/tmp/solution.py"
    sys.modules["solution"] = module
    sys.argv = ["solution.py"]
    try:
        exec(compile(source, "solution.py", "exec"), module.__dict__)
        names = {n: encode(module.__dict__[n], to_ref) for n in wanted if n in module.__dict__}
    except BaseException as exc:  # noqa: B036 - report any failure while loading, then stop
        send(reply_fd, {"load_error": [type(exc).__name__, str(exc)[:300]]})
        return
    send(reply_fd, {"ready": names})
    reader = LineReader(call_fd)
    while True:
        request = reader.recv()
        if request is None:
            return
        try:
            reply = {"ok": encode(_handle(request, refs), to_ref)}
        except BaseException as exc:  # noqa: B036 - the judge decides what an exception means
            reply = {"exc": [type(exc).__name__, str(exc)[:300]]}
        send(reply_fd, reply)


def _handle(request, refs):
    obj = refs[request["ref"]]
    op = request["op"]
    if op == "getattr":
        return getattr(obj, request["attr"])
    if op == "iter":
        return list(obj)
    if op == "len":
        return len(obj)
    args = decode(request["args"], refs.__getitem__)
    kwargs = decode(request["kwargs"], refs.__getitem__)
    if request.get("attr"):
        obj = getattr(obj, request["attr"])
    return obj(*args, **kwargs)


_agent_main()
