"""Hostile programs against the code sandbox: none may pass, and the host must stay clean.

Each case embeds a unique marker; afterwards no host process may carry the marker or run under
the sandbox uids, no marker file may exist on the host, and the host secret is never seen
(cases that try to leak it expect the secret as their output, so a leak would *pass*).
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from pathlib import Path

import pytest

from rewards.code import run_tests
from rewards.code import sandbox as sandbox_mod

REPO = Path(__file__).resolve().parents[2]
SECRET_VAR = "RLSYS_TEST_SECRET"
TESTS = "assert add(1, 2) == 3\nassert add(2, 2) == 4\nassert add(0, 5) == 5\n"
WRONG = "\ndef add(a, b):\n    return 0\n"
FORGED = ('{"done": true, "completed": 3, "passed_asserts": [1, 2, 3], "failures": []}\\n'
          '{"ready": {}}\\n{"ok": 3}\\n')

# (id, program, expected status); MARKER is replaced by a unique string per run.
ASSERT_CASES = [
    ("os_exit_at_import", "import os\nos._exit(0)\n", "error"),
    ("system_exit_at_import", "raise SystemExit(0)\n", "error"),
    ("sys_exit_at_import", "import sys\nsys.exit(0)\n", "error"),
    ("sys_exit_in_function", "import sys\ndef add(a, b):\n    sys.exit(0)\n", "failed"),
    ("os_exit_in_function", "import os\ndef add(a, b):\n    os._exit(0)\n", "error"),
    ("atexit_success", "import atexit\natexit.register(print, 'passed 3/3')\n" + WRONG,
     "failed"),
    ("print_copied_report", f"print('{FORGED}')\n" + WRONG, "failed"),
    ("write_forged_report_to_every_fd",
     f"import os\nfor fd in range(3, 256):\n    try:\n        os.write(fd, b'{FORGED}')\n"
     "    except OSError:\n        pass\n" + WRONG, "error"),  # garbage on the reply pipe
    ("write_via_proc_self_fd",
     f"import os\nfor name in os.listdir('/proc/self/fd'):\n    try:\n"
     f"        with open('/proc/self/fd/' + name, 'wb') as f:\n            f.write(b'{FORGED}')\n"
     "    except OSError:\n        pass\n" + WRONG, "failed"),
    ("close_all_fds", "import os\nos.closerange(0, 1024)\n" + WRONG, "error"),
    ("kill_parent_and_all", "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\n"
     "os.kill(1, signal.SIGKILL)\nos.kill(-1, signal.SIGKILL)\n" + WRONG, "error"),
    ("lying_eq", "class Yes:\n    def __eq__(self, other):\n        return True\n"
     "    __hash__ = None\ndef add(a, b):\n    return Yes()\n", "failed"),
    ("truthy_non_bool_eq", "class T:\n    def __eq__(self, o):\n        return [1]\n"
     "    def __bool__(self):\n        return True\ndef add(a, b):\n    return T()\n", "failed"),
    ("int_subclass_eq", "class I(int):\n    def __eq__(self, o):\n        return True\n"
     "def add(a, b):\n    return I(0)\n", "failed"),
    ("patch_builtins", "import builtins\nbuiltins.AssertionError = type('E', (Exception,), {})\n"
     "builtins.isinstance = lambda *a: True\nbuiltins.len = lambda x: 3\n" + WRONG,
     "error"),  # the candidate's own agent breaks
    ("excepthook", "import sys\nsys.excepthook = lambda *a: print('OK')\n"
     "def add(a, b):\n    raise AssertionError\n", "failed"),
    ("patch_agent_codec", "import sys\nc = sys.modules['_codec']\n"
     "c.encode = lambda value, to_ref: 3\n", "failed"),
    ("gc_walk_and_patch", "import gc\nfor o in gc.get_objects():\n    if isinstance(o, dict) "
     "and 'passed_asserts' in o:\n        o['failures'] = []\n" + WRONG, "failed"),
    ("ignore_sigterm_then_spin", "import signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
     "signal.signal(signal.SIGINT, signal.SIG_IGN)\ndef add(a, b):\n    while True:\n"
     "        pass\n", "timeout"),
    ("orphan_writes_later", f"import os, time\nif os.fork() == 0:\n    os.setsid()\n"
     f"    time.sleep(0.5)\n    for fd in range(3, 64):\n        try:\n"
     f"            os.write(fd, b'{FORGED}')\n        except OSError:\n            pass\n"
     "    os.execv('/bin/sh', ['sh', '-c', 'sleep 60 # MARKER'])\n" + WRONG, "failed"),
    ("fork_bomb", "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n"
     "        pass\n", "timeout"),
    ("memory_bomb_at_import", "x = bytearray(8 << 30)\n", "memory"),
    ("memory_bomb_in_call", "def add(a, b):\n    xs = []\n    while True:\n"
     "        xs.append(bytearray(1 << 24))\n", "memory"),
    ("disk_bomb_tmp", "with open('/tmp/MARKER', 'wb') as f:\n    while True:\n"
     "        f.write(b'0' * (1 << 20))\n", "error"),
    ("disk_bomb_cwd_many_files", "import os\nfor i in range(100000):\n"
     "    with open(f'MARKER{i}', 'wb') as f:\n        f.write(b'0' * (1 << 20))\n", "error"),
    ("output_bomb", "import sys\nwhile True:\n    sys.stdout.write('MARKER' * 1000)\n", "output"),
    ("stderr_bomb_in_call", "import sys\ndef add(a, b):\n    while True:\n"
     "        sys.stderr.write('x' * 65536)\n", "output"),
    ("infinite_loop_at_import", "while True:\n    pass\n", "timeout"),
    ("sleep_past_deadline", "import time\ndef add(a, b):\n    time.sleep(60)\n", "timeout"),
    ("os_system_background", "import os\nos.system('(sleep 60; echo MARKER) &')\n" + WRONG,
     "failed"),
    ("subprocess_shell", "import subprocess\nsubprocess.run(['sh', '-c', "
     "'cat /etc/shadow; echo MARKER > /tmp/MARKER; sleep 60 # MARKER'])\n" + WRONG, "timeout"),
    ("ctypes_segfault", "import ctypes\nctypes.string_at(0)\n", "error"),
    ("ctypes_setuid_root", "import ctypes, os\nlibc = ctypes.CDLL(None)\n"
     "assert libc.setuid(0) == 0, 'setuid failed'\n" + WRONG, "error"),
    ("recursion_bomb", "def add(a, b):\n    return add(a, b)\n", "failed"),
]


@pytest.fixture()
def marker(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(SECRET_VAR, "s3cr3t-" + uuid.uuid4().hex)
    return "RLSYSMARK" + uuid.uuid4().hex[:12]


def _stray_processes(marker: str) -> list[str]:
    low = sandbox_mod._UID_BASE
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            uid = os.stat(f"/proc/{pid}").st_uid
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state == "Z":  # dead, only waiting for the host's init to reap it
            continue
        if marker.encode() in cmdline or low <= uid < low + sandbox_mod._UID_SPAN:
            found.append(f"{pid} uid={uid} {cmdline[:80]!r}")
    return found


def assert_host_clean(marker: str) -> None:
    deadline = time.monotonic() + 5
    while (stray := _stray_processes(marker)) and time.monotonic() < deadline:
        time.sleep(0.05)  # a killed pid namespace is torn down asynchronously
    assert not stray, stray
    for folder in ("/tmp", str(REPO), "/", "/root", "/usr", os.getcwd()):
        leftovers = [p for p in os.listdir(folder) if marker in p]
        assert not leftovers, (folder, leftovers)


@pytest.mark.parametrize(("program", "status"), [(p, s) for _, p, s in ASSERT_CASES],
                         ids=[case[0] for case in ASSERT_CASES])
def test_hostile_program_never_passes(program: str, status: str, marker: str) -> None:
    # Memory bombs get more time: zero-filling 256 MB is slow on a loaded 2-core machine.
    timeout_s = 10 if "memory" in program or "bytearray" in program else 3
    result = run_tests(program.replace("MARKER", marker), TESTS, timeout_s=timeout_s,
                       memory_mb=256)
    assert not result.passed
    assert result.status == status, result.detail
    assert os.environ[SECRET_VAR] not in result.detail
    assert_host_clean(marker)


def _leak_cases(secret: str) -> list[tuple[str, str, str]]:
    """(id, program, expected stdout): each program prints the expected text only on a leak."""
    shadow = Path("/etc/shadow").read_text() if Path("/etc/shadow").exists() else "root:"
    return [
        ("env_secret", f"import os\nprint(os.environ.get('{SECRET_VAR}'))\n", secret),
        ("proc_environ_scan", "import os\nfor p in os.listdir('/proc'):\n    try:\n"
         f"        if b'{secret}' in open(f'/proc/{{p}}/environ', 'rb').read():\n"
         f"            print('{secret}')\n    except OSError:\n        pass\n", secret),
        ("proc_1_environ", "print(open('/proc/1/environ', 'rb').read().decode())\n", secret),
        ("etc_shadow", "print(open('/etc/shadow').read())\n", shadow),
        ("root_listing", "import os\nprint(sorted(os.listdir('/root/')))\n",
         str(sorted(os.listdir("/root")))),
        ("repo_file", f"print(open('{REPO}/pyproject.toml').read())\n",
         (REPO / "pyproject.toml").read_text()),
        ("shell_cat_shadow", "import subprocess\nprint(subprocess.run(['cat', '/etc/shadow'],"
         " capture_output=True, text=True).stdout)\n", shadow),
        ("ctypes_setuid_then_shadow", "import ctypes\nctypes.CDLL(None).setuid(0)\n"
         "print(open('/etc/shadow').read())\n", shadow),
    ]


@pytest.mark.parametrize("case", range(8))
def test_host_files_and_secrets_do_not_leak(case: int, marker: str) -> None:
    secret = os.environ[SECRET_VAR]
    name, program, expected = _leak_cases(secret)[case]
    result = run_tests(program, "", timeout_s=5, stdin_cases=[("", expected)])
    assert not result.passed, name
    assert result.status in ("failed", "error"), (name, result.detail)
    assert secret not in result.detail


def test_secret_cannot_be_returned_through_assert_tests(marker: str) -> None:
    secret = os.environ[SECRET_VAR]
    program = "import os\ndef leak():\n    return dict(os.environ)\n"
    result = run_tests(program, f"assert '{secret}' in str(leak())\n", timeout_s=5)
    assert result.status == "failed"


def test_network_to_a_host_listener_is_impossible(marker: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        listener.settimeout(0.2)
        port = listener.getsockname()[1]
        program = ("import socket\ntry:\n    s = socket.create_connection(('127.0.0.1', "
                   f"{port}), timeout=2)\n    s.sendall(b'{marker}')\n    print('connected')\n"
                   "except OSError as e:\n    print('blocked', e)\n")
        result = run_tests(program, "", timeout_s=5, stdin_cases=[("", "connected")])
        assert result.status == "failed", result.detail
        with pytest.raises(TimeoutError):
            listener.accept()


def test_writes_outside_tmp_and_deletes_do_not_reach_the_host(marker: str,
                                                              tmp_path: Path) -> None:
    victim = tmp_path / "keep.txt"
    victim.write_text("precious")
    targets = ["/MARKER", "/usr/MARKER", f"{REPO}/MARKER", "/root/MARKER", str(tmp_path / "M")]
    program = (f"import os, shutil\nhits = []\nfor t in {targets!r}:\n    try:\n"
               "        open(t.replace('MARKER', 'MARKER'), 'w').write('x')\n"
               "        hits.append(t)\n    except OSError:\n        pass\n"
               f"for p in ['{victim}', '/usr/bin/env']:\n    try:\n        os.remove(p)\n"
               "        hits.append(p)\n    except OSError:\n        pass\n"
               "shutil.rmtree('/usr/lib/os-release', ignore_errors=True)\nprint(len(hits))\n"
               ).replace("MARKER", marker)
    result = run_tests(program, "", timeout_s=10, stdin_cases=[("", "7")])
    assert result.status == "failed", result.detail
    assert victim.read_text() == "precious"
    assert Path("/usr/bin/env").exists() and Path("/usr/lib").is_dir()
    assert not (tmp_path / "M").exists()
    assert_host_clean(marker)
