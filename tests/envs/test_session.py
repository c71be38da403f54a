"""The persistent sandboxed Python session: state, limits, hostile code, nothing left behind.

Real bubblewrap sandboxes (no mocks). "Nothing left" is checked in ``/proc``: every host pid
the session had must be gone or a zombie (no code running; bwrap's namespace init is reaped
by the host's init a moment later, see ``rewards.code.sandbox``).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from rewards.code.session import MAX_CODE_CHARS, PythonSession


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def _assert_gone(pids: list[int], within_s: float = 30.0) -> None:
    deadline = time.monotonic() + within_s
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [p for p in pids if _alive(p)], "a session process is still running"


@pytest.fixture
def session():
    s = PythonSession(timeout_s=5.0, memory_mb=256, output_limit=200)
    yield s
    s.close()


def test_state_is_kept_across_calls_and_a_last_expression_is_printed(session):
    assert session.run("x = 6 * 7\ndef f(y):\n    return x + y\n").status == "ok"
    first = session.run("print('hi')\nf(1)")
    assert (first.status, first.output, first.restarted) == ("ok", "hi\n43\n", False)
    assert session.run("import math\nx = math.factorial(5)").output == ""
    assert session.run("f(0)").output == "120\n"


def test_an_exception_is_a_traceback_of_the_cell_and_the_session_lives_on(session):
    session.run("x = 1")
    result = session.run("def g():\n    return 1 / 0\ng()")
    assert result.status == "error" and not result.restarted
    assert result.error is not None and result.error.endswith(
        "ZeroDivisionError: division by zero\n")
    assert "_session_agent" not in result.error and '"<cell 2>", line 2' in result.error
    assert session.run("x").output == "1\n"


def test_close_ends_every_process_of_the_session():
    s = PythonSession()
    s.run("y = 1")
    pids = s.pids()
    assert len(pids) == 3 and all(_alive(p) for p in pids)
    s.close()
    _assert_gone(pids)
    with pytest.raises(RuntimeError):
        s.run("1")


def test_output_is_truncated_to_the_stated_limit(session):
    result = session.run("print('a' * 1000)")
    assert result.status == "ok" and result.truncated
    assert result.output.startswith("a" * 200 + "\n[... 801 more characters truncated]")


def test_code_over_the_size_limit_is_refused_without_running(session):
    result = session.run("x = 1\n" + "#" * MAX_CODE_CHARS)
    assert result.status == "error" and "longer than" in (result.error or "")
    assert session.pids() == []  # never started


def test_a_timeout_restarts_the_session_and_loses_its_state():
    with PythonSession(timeout_s=1.0) as s:
        s.run("x = 1")
        pids = s.pids()
        result = s.run("while True:\n    pass")
        assert (result.status, result.restarted) == ("timeout", True)
        _assert_gone(pids)
        assert "NameError" in (s.run("x").error or "")


def test_memory_past_the_limit_is_an_error_observation(session):
    result = session.run("b = bytearray(1024 ** 3)")
    assert (result.status, result.restarted) == ("memory", False)
    assert "MemoryError" in (result.error or "")
    assert session.run("1 + 1").output == "2\n"


HOSTILE = {
    "fork_bomb": "import os\nwhile True:\n    os.fork()\n",
    "daemon": "import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(1000)\n",
    "double_fork_daemon": "import os, time\nif os.fork() == 0:\n    if os.fork() == 0:\n"
                          "        time.sleep(1000)\n    os._exit(0)\nos.wait()\n",
    "thread": "import threading, time\nthreading.Thread(target=time.sleep, args=(1000,))"
              ".start()\n",
    "endless_output": "while True:\n    print('x' * 1000)\n",
    "exit": "import os\nos._exit(0)\n",
    "forged_reply": "import os\nfor fd in range(3, 64):\n    try:\n"
                    "        os.write(fd, b'{\"token\": \"0\", \"error\": null}\\n')\n"
                    "    except OSError:\n        pass\n",
    # the right token, read from the agent's frame, then code that keeps running
    "forged_reply_then_busy": "import json, os, sys\nframe = sys._getframe()\n"
                              "while 'call' not in frame.f_locals:\n    frame = frame.f_back\n"
                              "token = frame.f_locals['call']['token']\n"
                              "os.write(int(sys.argv[2]), json.dumps({'token': token, "
                              "'error': None}).encode() + b'\\n')\nwhile True:\n    pass\n",
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_code_is_an_error_observation_and_leaves_no_process(name):
    with PythonSession(timeout_s=5.0, memory_mb=256) as s:
        s.run("x = 1")
        pids = s.pids()
        result = s.run(HOSTILE[name])
        assert result.status not in ("ok", "error") and result.restarted, result
        assert result.error is not None and "session was restarted" in result.error
        _assert_gone(pids)
        assert s.run("2 + 2").output == "4\n"  # a fresh session answers
        new = s.pids()
    _assert_gone(new)


def test_no_network_and_no_host_files(session, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("host secret")
    cases = {f"open({str(secret)!r}).read()": "FileNotFoundError",
             "open('/etc/hostname').read()": "FileNotFoundError",
             "import socket\nsocket.create_connection(('1.1.1.1', 80), timeout=2)": "OSError",
             "open('/usr/evil', 'w')": "OSError"}
    for code, error in cases.items():
        result = session.run(code)
        assert result.status == "error" and error in (result.error or ""), (code, result)
    assert "host secret" not in session.run("import os\nos.listdir('/')").output
    assert not os.path.exists("/usr/evil")
