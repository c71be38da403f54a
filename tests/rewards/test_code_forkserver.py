"""The fork-server path of ``SandboxPool``: same verdicts, and nothing crosses executions.

A pool with one worker serves consecutive programs from the same warm sandbox, so each test
below runs an attacker first and a witness after it in that sandbox: the witness must not see
the attacker's files, globals, processes or keys, and a fork bomb or daemon must not change
what the witness can do. The hostile programs of ``test_code_hostile`` get the same statuses
here, and once the pool is closed no process of its sandboxes is left on the host.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest

from rewards.code import SandboxPool, run_tests, seccomp
from rewards.code.forkserver import ForkServer, ForkServerError
from rewards.code.runner import STDIN_RUNNER
from rewards.code.sandbox import Limits, memfd
from rewards.code.session import _proc_tree
from tests.rewards.test_code_hostile import ASSERT_CASES, TESTS, assert_host_clean
from tests.rewards.test_code_memory import ATTACK, MEMORY_MB, PROBE, footprint_bytes


def _server_pids(pool: SandboxPool) -> set[int]:
    """Host pids of the pool's fork-server sandboxes and their processes."""
    pids: set[int] = set()
    for servers in pool._servers:
        for server in (servers.candidate, servers.judge):
            for root in server.pids():
                pids |= {root, *_proc_tree(root)}
    return pids


def _run(pool: SandboxPool, program: str, expected: str = "", **kwargs: object):
    return pool.submit(program, "", stdin_cases=[("", expected)], **kwargs).result()


@pytest.fixture()
def pool():
    with SandboxPool(workers=1, fork_server=True) as one:
        yield one


def test_files_of_an_execution_are_gone_for_the_next(pool: SandboxPool) -> None:
    marker = uuid.uuid4().hex
    writer = (f"for p in ('/tmp/{marker}', '/dev/shm/{marker}', '{marker}'):\n"
              "    open(p, 'w').write('secret')\nprint('written')\n")
    assert _run(pool, writer, "written").passed
    reader = "import os\nprint(os.listdir('/tmp'), os.listdir('/dev/shm'), os.getcwd())\n"
    result = _run(pool, reader, "[] [] /tmp")
    assert result.passed, result.detail


def test_globals_and_modules_of_an_execution_are_gone_for_the_next(pool: SandboxPool) -> None:
    patcher = ("import builtins, json, os, sys\nbuiltins.LEAK = 1\njson.dumps = None\n"
               "sys.modules['leak'] = sys\nos.environ['LEAK'] = '1'\nprint('patched')\n")
    assert _run(pool, patcher, "patched").passed
    witness = ("import builtins, json, os, sys\nprint(hasattr(builtins, 'LEAK'), "
               "json.dumps is None, 'leak' in sys.modules, os.environ.get('LEAK'))\n")
    result = _run(pool, witness, "False False False None")
    assert result.passed, result.detail


FORK_COUNT = '''
import os, time
n = 0
for _ in range(50):
    try:
        pid = os.fork()
    except OSError:
        break
    if pid == 0:
        time.sleep(3)
        os._exit(0)
    n += 1
print(n, sorted(int(p) for p in os.listdir('/proc') if p.isdigit())[:2])
'''


def test_a_fork_bomb_or_daemon_does_not_outlive_its_execution(pool: SandboxPool) -> None:
    marker = "RLSYSMARK" + uuid.uuid4().hex[:12]
    before = _run(pool, FORK_COUNT, "unknown")
    forks = before.detail.split("got '")[1].split(" ")[0]
    assert int(forks) >= 1, before.detail
    baseline = _server_pids(pool)
    attack = ("import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
              f"        os.execv('/bin/sh', ['sh', '-c', 'sleep 60 # {marker}'])\n"
              "    os._exit(0)\nwhile True:\n    try:\n        os.fork()\n"
              "    except OSError:\n        time.sleep(0.01)\n")
    assert _run(pool, attack, "", timeout_s=2).status == "timeout"
    # Nothing of the attack is left beside the server's own processes ...
    assert _server_pids(pool) <= baseline
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                assert marker.encode() not in fh.read(), f"pid {pid} outlived its execution"
        except OSError:
            continue
    # ... and the next execution may fork exactly as many processes as before, as pid 2 of a
    # pid namespace holding only itself and its init.
    after = _run(pool, FORK_COUNT, f"{forks} [1, 2]")
    assert after.passed, after.detail


CAPS = '''
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
status = dict(line.split(":", 1) for line in open("/proc/self/status"))
print([int(status[k], 16) for k in ("CapEff", "CapPrm", "CapBnd", "CapAmb", "CapInh")],
      status["NoNewPrivs"].strip(), status["Seccomp"].strip())
print("key", libc.syscall(ADD_KEY, b"user", b"k", b"v", 1, -4) == -1 and ctypes.get_errno())
print("mount", libc.mount(b"none", b"/tmp", b"tmpfs", 0, None) == -1)
for flag in (0x10000000, 0x20000, 0x40000000):  # user, mount, net namespaces
    print("unshare", hex(flag), libc.unshare(flag) == -1)
'''


def test_an_execution_has_no_capability_nor_keyring(pool: SandboxPool) -> None:
    numbers = seccomp._ARCHES.get(platform.machine())
    if numbers is None or seccomp.program() is None:
        pytest.skip("no seccomp filter on this architecture")
    expected = ("[0, 0, 0, 0, 0] 1 2\nkey 1\nmount True\nunshare 0x10000000 True\n"
                "unshare 0x20000 True\nunshare 0x40000000 True\n")
    program = CAPS.replace("ADD_KEY", str(numbers[1]["add_key"]))
    result = _run(pool, program, expected)
    assert result.passed, result.detail


def test_memory_outside_the_caps_is_refused_in_a_fork_server(pool: SandboxPool) -> None:
    expected = ("memfd refused\nshmget refused\nmsgget refused\nuserns refused\n"
                "/a 0\n/dev/a 0\n/dev/shm/a 8\n/tmp/a 16\n")
    for _ in range(2):  # the second run gets fresh, empty tmpfs of the same caps
        result = _run(pool, PROBE, expected, timeout_s=10, memory_mb=128)
        assert result.passed, result.detail


def test_memory_of_an_execution_stays_within_memory_mb(pool: SandboxPool) -> None:
    assert _run(pool, "print(1)", "1").passed  # the server is up: its memory counts too
    peak, stop = [0], threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], footprint_bytes())
            stop.wait(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        result = _run(pool, ATTACK, "", timeout_s=8, memory_mb=MEMORY_MB)
    finally:
        stop.set()
        sampler.join()
    peak_mb = peak[0] / (1 << 20)
    assert result.status in ("timeout", "memory"), result.detail
    assert MEMORY_MB / 2 <= peak_mb <= MEMORY_MB, f"held {peak_mb:.0f} MB of {MEMORY_MB}"


def test_a_dead_server_is_replaced(pool: SandboxPool) -> None:
    assert _run(pool, "print(1)", "1").passed
    server = pool._servers[0].candidate
    os.kill(server.pids()[0], 9)
    assert server._proc is not None and server._proc.wait(timeout=30) != 0
    result = _run(pool, "print(2)", "2")
    assert result.passed, result.detail


@pytest.fixture(scope="module")
def shared_pool():
    marker = "RLSYSMARK" + uuid.uuid4().hex[:12]
    with SandboxPool(workers=1, fork_server=True) as one:
        yield one, marker
    assert_host_clean(marker)  # the pool closed: none of its sandboxes is left


@pytest.mark.parametrize(("program", "status"), [(p, s) for _, p, s in ASSERT_CASES],
                         ids=[case[0] for case in ASSERT_CASES])
def test_hostile_programs_get_the_same_status_through_a_fork_server(
        program: str, status: str, shared_pool: tuple[SandboxPool, str]) -> None:
    pool, marker = shared_pool
    timeout_s = 10 if "memory" in program or "bytearray" in program else 3
    baseline = _server_pids(pool)
    result = pool.submit(program.replace("MARKER", marker), TESTS, timeout_s=timeout_s,
                         memory_mb=256).result()
    assert not result.passed
    assert result.status == status, result.detail
    if baseline:  # the previous execution left only the servers (no daemon, no orphan)
        assert _server_pids(pool) <= baseline


LOOPBACK = """
import socket
def add(a, b):  # a loopback round trip inside the sandbox, as under bwrap
    with socket.create_server(("127.0.0.1", 0)) as server:
        with socket.create_connection(server.getsockname()) as client:
            conn, _ = server.accept()
            client.sendall(str(a + b).encode())
            return int(conn.recv(16))
"""


def test_fork_server_and_bwrap_verdicts_agree() -> None:
    programs = ["def add(a, b):\n    return a + b\n", "def add(a, b):\n    return a - b\n",
                "import sys\nsys.exit(0)\n", "def add(a, b):\n    return [a + b]\n",
                LOOPBACK]
    with SandboxPool(workers=2, fork_server=True) as pool:
        fast = pool.map([{"program": p, "tests": TESTS} for p in programs])
    slow = [run_tests(p, TESTS) for p in programs]
    assert fast[-1].passed, fast[-1].detail
    assert [(r.status, r.tests_run, r.detail) for r in fast] == \
        [(r.status, r.tests_run, r.detail) for r in slow]


@pytest.mark.parametrize("memory_mb", [1024, 64])
def test_a_program_may_run_as_many_processes_as_under_bwrap(memory_mb: int) -> None:
    with SandboxPool(workers=1, fork_server=True) as pool:
        fast = _run(pool, FORK_COUNT, "?", memory_mb=memory_mb)
    slow = run_tests(FORK_COUNT, "", memory_mb=memory_mb, stdin_cases=[("", "?")])
    assert fast.status == slow.status == "failed"
    assert fast.detail == slow.detail  # "got '<forks> [1, 2]'": same count, same pids


POD_SCRIPT = """
from rewards.code import SandboxPool
with SandboxPool(1, fork_server=True) as pool:
    good = pool.submit("def add(a, b):\\n    return a + b\\n", "assert add(1, 2) == 3\\n").result()
    bad = pool.submit("def add(a, b):\\n    return a - b\\n", "assert add(1, 2) == 3\\n").result()
print(good.status, bad.status)
"""


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                    reason="needs root and setpriv, as the reward-service pod runs the sandbox")
def test_fork_server_works_with_exactly_the_pod_capabilities() -> None:
    # The reward-service pod keeps SYS_ADMIN, SETUID, SETGID and KILL (README, "The code
    # sandbox in a pod"); the server's own capabilities exist only in its user namespace.
    done = subprocess.run(["setpriv", "--bounding-set=-all,+sys_admin,+setuid,+setgid,+kill",
                           "--inh-caps=-all", sys.executable, "-c", POD_SCRIPT],
                          capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[2])
    assert done.stdout.split() == ["passed", "failed"], done.stderr[-2000:]


def test_a_setup_failure_is_an_error_not_a_verdict() -> None:
    # tmpfs reads size=0 as "unlimited": the server refuses to set such an execution up, the
    # program never runs, and the caller gets ForkServerError instead of a status.
    server = ForkServer({"stdin": STDIN_RUNNER})
    try:
        program = memfd("print('ran')")
        read_end, write_end = os.pipe()
        execution = server.launch("stdin", [str(program)], Limits(tmpfs_mb=0),
                                  stdin=subprocess.DEVNULL, stdout=write_end, stderr=write_end,
                                  pass_fds=(program,))
        os.close(write_end)
        os.close(program)
        with pytest.raises(ForkServerError, match="tmpfs sizes must be positive"):
            execution.wait(timeout=30)
        assert os.read(read_end, 100) == b""
        os.close(read_end)
        assert server.pids() == []  # the server was ended; the next launch starts a new one
    finally:
        server.close()
