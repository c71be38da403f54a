"""Judge: runs the (rewritten) tests against the candidate over a plain-data pipe (in a sandbox).

Runs in its own sandbox (the bootstrap installs ``_codec``); no candidate code is ever loaded
here. Names the tests take from the candidate are ``RemoteRef`` proxies: calling one sends the
arguments to the candidate agent and returns its answer decoded as plain data (or another
proxy). A proxy answers only data queries (call, attribute, ``len``, ``[]``, iteration); every
predicate on it (truth, ``==``, ``in``, order, hash, arithmetic, conversions, type) is decided
here, so every assertion is evaluated by trusted code on trusted types. A candidate exception
is raised into the tests as its builtin type but fails the statement unless an ``except`` of
the tests handles it (``_PENDING``). The final report goes to a pipe only the host reads.
Rules in full: ``rewards.code``. argv: spec_fd report_fd call_fd reply_fd.
"""

import builtins
import json
import sys

from _codec import LineReader, decode, encode, read_all, send


class _Fail(BaseException):
    """An assertion of the tests did not hold (BaseException: tests' ``except`` can't eat it)."""


class _Swallowed(BaseException):
    """A candidate exception was handled by something other than an ``except`` of the tests."""


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

    def rpc(self, request, answer=None):
        """The candidate's reply to ``request``; a candidate exception is raised here and
        recorded in ``_PENDING``, except an ``answer`` type (it means "absent", not "error")."""
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
        message = f"{str(text)[:300]} (raised by the candidate)"
        if answer is not None and name == answer.__name__:
            raise answer(message)
        cls = getattr(builtins, str(name), None)
        if not (isinstance(cls, type) and issubclass(cls, Exception)):
            cls = RemoteError  # BaseException types (SystemExit, GeneratorExit...) and others
        try:
            exc = cls(message)
        except Exception:  # e.g. UnicodeDecodeError needs five arguments
            exc = RemoteError(f"{name}: {message}")
        _PENDING.append(exc)
        raise exc


_CHANNEL: _Channel | None = None
# Candidate exceptions raised into the current statement that no ``except`` of the tests has
# handled yet. One left when an assert runs or the statement ends means that something else
# (map/filter/zip/next ending on StopIteration, hasattr/getattr on AttributeError, any library
# code) swallowed it and the tests' control flow was steered by the candidate: a failure.
_PENDING = []


def _rpc(request, answer=None):
    """``_CHANNEL.rpc``; a proxy exists only after ``_judge_main`` opened the channel."""
    if _CHANNEL is None:
        raise CandidateGone("no channel to the candidate (_judge_main has not run)")
    return _CHANNEL.rpc(request, answer)


def _caught():
    """First call of every ``except`` clause of the tests (inserted by ``rewrite``)."""
    exc = sys.exc_info()[1]
    if isinstance(exc, (_Fail, _Swallowed, CandidateGone, CandidateOutput)):
        raise exc  # the judge's own signals are not the tests' to swallow
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        _PENDING[:] = [p for p in _PENDING if p is not exc]
        exc = exc.__cause__ or exc.__context__


def _check_pending():
    if _PENDING:
        exc = _PENDING[0]
        raise _Swallowed(f"the candidate raised {type(exc).__name__} ({str(exc)[:200]}) and "
                         "it was swallowed outside the tests' own except clauses")


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
        return _rpc({"op": "call", "ref": self._ref, "attr": attr,
                     "args": encode(list(args), _to_ref),
                     "kwargs": encode(dict(kwargs), _to_ref)})

    def __call__(self, *args, **kwargs):
        return self._call(None, args, kwargs)

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        # An absent attribute is an answer (hasattr, getattr with a default), not an error.
        return _rpc({"op": "getattr", "ref": self._ref, "attr": name}, AttributeError)

    def __iter__(self):
        items = _rpc({"op": "iter", "ref": self._ref})
        if type(items) is not list:
            raise CandidateGone("garbled reply to iter")
        return iter(items)

    def __len__(self):
        # The TypeError of an object without len() is an answer: list() relies on it.
        return _rpc({"op": "len", "ref": self._ref}, TypeError)

    def __getitem__(self, key):
        return self._call("__getitem__", (key,), {})

    def __contains__(self, key):
        # Membership is judged here, on the plain data the object iterates to: the candidate's
        # own __contains__ would be a predicate it answers for itself.
        return key in list(self.__iter__())

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
        _check_pending()  # evaluating the condition may have swallowed one
        if not condition:
            raise _Fail(index)
        passed_asserts.add(index)

    namespace["__rlsys_check__"] = check
    namespace["__rlsys_caught__"] = _caught
    completed, failures = 0, []
    for i, source in enumerate(statements):
        _PENDING.clear()
        try:
            exec(compile(source, f"<tests statement {i + 1}>", "exec"), namespace)
            _check_pending()
            completed += 1
        except _Fail as exc:
            failures.append({"stmt": i, "kind": "assert", "msg": f"assert #{exc.args[0]} failed"})
        except _Swallowed as exc:
            failures.append({"stmt": i, "kind": "exception", "type": "Swallowed",
                             "msg": str(exc)})
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
