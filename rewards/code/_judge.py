"""Judge: runs the (rewritten) tests against the candidate over a plain-data pipe (in a sandbox).

Runs in its own sandbox (the bootstrap installs ``_codec``); no candidate code is ever loaded
here. Names the tests take from the candidate are ``RemoteRef`` proxies: calling one sends the
arguments to the candidate agent and returns its answer decoded as plain data (or another
proxy). Proxies have no truth value and compare by identity, so every assertion is evaluated
by trusted code on trusted types. The final report goes to a pipe only the host reads.
argv: spec_fd report_fd call_fd reply_fd.
"""

import builtins
import json
import sys

from _codec import LineReader, decode, encode, read_all, send


class _Fail(BaseException):
    """An assertion of the tests did not hold (BaseException: tests' ``except`` can't eat it)."""


class CandidateGone(BaseException):
    """The candidate process stopped answering (exited, crashed or was killed)."""


class CandidateOutput(BaseException):
    """The candidate sent a reply longer than the message cap."""


class RemoteError(Exception):
    """The candidate raised an exception that is not a builtin exception type."""


class _Channel:
    def __init__(self, call_fd, reply_fd):
        self.call_fd = call_fd
        self.reader = LineReader(reply_fd)

    def recv(self):
        try:
            message = self.reader.recv()
        except OverflowError as exc:
            raise CandidateOutput(str(exc)) from None
        except ValueError as exc:
            raise CandidateGone(f"garbled reply: {str(exc)[:100]}") from None
        if message is None:
            raise CandidateGone("candidate process ended")
        if type(message) is not dict:
            raise CandidateGone("garbled reply")
        return message

    def rpc(self, request):
        try:
            send(self.call_fd, request)
        except OSError:
            raise CandidateGone("candidate process ended") from None
        reply = self.recv()
        if "ok" in reply:
            try:
                return decode(reply["ok"], RemoteRef)
            except (ValueError, TypeError, RecursionError) as exc:
                raise CandidateGone(f"garbled reply: {exc}") from None
        name, text = reply.get("exc") or ("RemoteError", "garbled reply")
        cls = getattr(builtins, str(name), None)
        if not (isinstance(cls, type) and issubclass(cls, Exception)):
            cls = RemoteError
        raise cls(f"{str(text)[:300]} (raised by the candidate)")


_CHANNEL = None


def _to_ref(value):
    if type(value) is RemoteRef:
        return value._ref
    raise TypeError(f"cannot pass a {type(value).__name__} to the candidate")


class RemoteRef:
    """A proxy for an object living in the candidate's process."""

    __slots__ = ("_ref",)

    def __init__(self, ref):
        self._ref = ref

    def _call(self, attr, args, kwargs):
        return _CHANNEL.rpc({"op": "call", "ref": self._ref, "attr": attr,
                             "args": encode(list(args), _to_ref),
                             "kwargs": encode(dict(kwargs), _to_ref)})

    def __call__(self, *args, **kwargs):
        return self._call(None, args, kwargs)

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _CHANNEL.rpc({"op": "getattr", "ref": self._ref, "attr": name})

    def __iter__(self):
        return iter(_CHANNEL.rpc({"op": "iter", "ref": self._ref}))

    def __len__(self):
        try:
            return self._call("__len__", (), {})
        except AttributeError:  # like len() of an object without __len__ (list() relies on it)
            raise TypeError("candidate object has no len()") from None

    def __getitem__(self, key):
        return self._call("__getitem__", (key,), {})

    def __contains__(self, key):
        return self._call("__contains__", (key,), {})

    def __bool__(self):
        raise TypeError("a candidate object has no trusted truth value")

    def __repr__(self):
        return f"<candidate object #{self._ref}>"


def _judge_main():
    global _CHANNEL
    spec_fd, report_fd, call_fd, reply_fd = (int(a) for a in sys.argv[1:5])
    spec = json.loads(read_all(spec_fd))
    _CHANNEL = _Channel(call_fd, reply_fd)
    if sys.flags.optimize:
        send(report_fd, {"internal": "judge must not run with -O"})
        return
    try:
        ready = _CHANNEL.recv()
    except (CandidateGone, CandidateOutput) as exc:
        send(report_fd, {"load_error": [type(exc).__name__, str(exc)]})
        return
    if "ready" not in ready:
        send(report_fd, {"load_error": ready.get("load_error") or ["CandidateGone", "no ready"]})
        return
    namespace = {"__name__": "__main__", "__builtins__": builtins}
    for module in spec["stdlib"]:
        try:
            namespace[module] = __import__(module)
        except ImportError:
            pass
    try:
        for name, value in dict(ready["ready"]).items():
            if name in spec["names"]:
                namespace[name] = decode(value, RemoteRef)
    except (ValueError, TypeError, RecursionError):
        send(report_fd, {"load_error": ["CandidateGone", "garbled ready message"]})
        return
    send(report_fd, _run_statements(spec["statements"], namespace))


def _run_statements(statements, namespace):
    passed_asserts = set()

    def check(index, condition):
        if not condition:
            raise _Fail(index)
        passed_asserts.add(index)

    namespace["__rlsys_check__"] = check
    completed, failures = 0, []
    for i, source in enumerate(statements):
        try:
            exec(compile(source, f"<tests statement {i + 1}>", "exec"), namespace)
            completed += 1
        except _Fail as exc:
            failures.append({"stmt": i, "kind": "assert", "msg": f"assert #{exc.args[0]} failed"})
        except CandidateOutput as exc:
            failures.append({"stmt": i, "kind": "output", "msg": str(exc)})
            break
        except CandidateGone as exc:
            failures.append({"stmt": i, "kind": "gone", "msg": str(exc)})
            break
        except BaseException as exc:  # noqa: B036 - a test statement that raised has failed
            failures.append({"stmt": i, "kind": "exception", "type": type(exc).__name__,
                             "msg": str(exc)[:300]})
    return {"done": True, "completed": completed, "passed_asserts": sorted(passed_asserts),
            "failures": failures[:8]}


_judge_main()
