"""Fork server inside one sandbox (``rewards.code.forkserver``): a fresh process per execution.

Runs inside a bwrap sandbox (``sandbox.launch`` with CAP_SYS_ADMIN, CAP_SETPCAP, CAP_NET_ADMIN in
the sandbox's own user namespace, never on the host) with the standard library only. It pre-compiles
the programs it may run (for ``runner``: candidate agent, judge, stdin runner) and installs their
helper modules (``_codec``), becomes pid 1 of a pid namespace of its own (so that it may later enter
it again with ``setns``), then serves one execution at a time over a SOCK_SEQPACKET socket:

* request ``{"prog", "targets", "args_fd", "tmp", "shm", "rlimits"}`` with the execution's file
  descriptors attached (SCM_RIGHTS). Only numbers cross this socket: program text, test data and
  arguments arrive in descriptors this process never reads, so no later execution (a fork of this
  process) can find an earlier one's data in its memory.
* per execution, a fork ``G`` made pid 1 of a **new pid namespace**, which unshares mount, IPC and
  network namespaces (only a loopback, brought up as bwrap does), mounts a fresh size-capped tmpfs
  on ``/tmp`` and ``/dev/shm`` and a fresh ``/proc``, places the descriptors at the host's numbers
  and closes every other one, sets the rlimits (hard = soft), drops every capability (bounding set
  included), sets no_new_privs, installs the extra seccomp filter, then forks ``P``, which runs the
  program while ``G`` reaps orphans and exits with ``P``'s status (128 + signal if killed, as
  bwrap). When ``G`` exits the kernel kills whatever is left in its pid namespace, and only then
  does this server see ``G`` exit and report ``{"exit": rc}``.
* ``{"kill": true}``: SIGKILL ``G`` (its whole pid namespace dies), then report its exit.
* at start, ``{"ready": true, "base_tasks": n}``: the tasks this sandbox's uid already counts
  against RLIMIT_NPROC (measured by a probe), so the host can cap an execution's own tasks.

Nothing here trusts the executions: they only ever get a fork of this process after it has dropped
everything above. This file does not decide verdicts or limits; the host does. argv: socket_fd
sources_fd.
"""

import builtins
import ctypes
import fcntl
import gc
import json
import os
import resource
import select
import signal
import socket
import struct
import sys

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                        ctypes.c_void_p]
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
                        ctypes.c_ulong]
NEWNS, NEWPID, NEWIPC, NEWNET = 0x20000, 0x20000000, 0x08000000, 0x40000000
MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_RDONLY, MS_BIND, MS_REMOUNT = 2, 4, 8, 1, 4096, 32
PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, PR_CAP_AMBIENT = 24, 38, 22, 47
SECCOMP_MODE_FILTER, PR_CAP_AMBIENT_CLEAR_ALL = 2, 4
SIOCSIFFLAGS, IFF_UP, IFF_LOOPBACK, IFF_RUNNING = 0x8914, 0x1, 0x8, 0x40
SETUP_FAILED = 125  # G's exit status when it could not set the execution up


def _check(result, what):
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _drop_capabilities(cap_last):
    for cap in range(cap_last + 1):
        _check(_libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0), "drop bounding capability")
    _check(_libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0), "clear ambient")
    header = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this thread
    data = (ctypes.c_uint32 * 6)()  # effective, permitted, inheritable x 2 words: all zero
    _check(_libc.capset(header, data), "capset")
    _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
    with open("/proc/self/status") as fh:
        caps = [line.split()[1] for line in fh if line.startswith(("CapEff", "CapPrm", "CapBnd",
                                                                    "CapAmb", "CapInh"))]
    if len(caps) != 5 or any(int(value, 16) for value in caps):
        raise OSError(0, f"capabilities left after dropping: {caps}")


def _install_seccomp(program):
    if not program:
        return
    buf = ctypes.create_string_buffer(program, len(program))
    fprog = struct.pack("HxxxxxxP", len(program) // 8, ctypes.addressof(buf))
    fbuf = ctypes.create_string_buffer(fprog, len(fprog))
    _check(_libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(fbuf), 0, 0),
           "seccomp")


def _mounts(tmp_bytes, shm_bytes):
    if not (isinstance(tmp_bytes, int) and isinstance(shm_bytes, int)
            and tmp_bytes > 0 and shm_bytes > 0):  # tmpfs reads size=0 as "no limit"
        raise ValueError(f"tmpfs sizes must be positive, got {tmp_bytes} and {shm_bytes}")
    _check(_libc.unshare(NEWNS | NEWIPC | NEWNET), "unshare(mount, ipc, net)")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:  # loopback up, as bwrap
        flags_req = struct.pack("16sH22x", b"lo", IFF_UP | IFF_LOOPBACK | IFF_RUNNING)
        fcntl.ioctl(sock.fileno(), SIOCSIFFLAGS, flags_req)
    flags = MS_NOSUID | MS_NODEV
    _check(_libc.mount(b"tmpfs", b"/tmp", b"tmpfs", flags, f"size={tmp_bytes}".encode()),
           "tmpfs /tmp")
    _check(_libc.mount(b"tmpfs", b"/dev/shm", b"tmpfs", flags, f"size={shm_bytes}".encode()),
           "tmpfs /dev/shm")
    _check(_libc.mount(b"proc", b"/proc", b"proc", flags | MS_NOEXEC, None), "proc")
    for sub in (b"/proc/sys", b"/proc/sysrq-trigger", b"/proc/irq", b"/proc/bus"):
        if os.path.exists(sub):  # read-only, as bwrap's own /proc
            _check(_libc.mount(sub, sub, None, MS_BIND, None), "bind " + sub.decode())
            _check(_libc.mount(sub, sub, None, MS_BIND | MS_REMOUNT | MS_RDONLY | flags, None),
                   "read-only " + sub.decode())
    os.chdir("/tmp")


def _place_fds(received, targets, extra):
    """Put ``received[i]`` at number ``targets[i]`` and ``extra`` above them all; close every
    other descriptor. Returns ``extra``'s new number."""
    top = max([*received, *targets, extra, 2]) + 1
    temps = [fcntl.fcntl(fd, fcntl.F_DUPFD, top) for fd in received]
    extra = fcntl.fcntl(extra, fcntl.F_DUPFD, top + len(temps) + 1)
    for temp, target in zip(temps, targets, strict=True):
        os.dup2(temp, target)
    low = 0
    for fd in sorted({*targets, extra}):
        if fd > low:
            os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, 1 << 20)
    return extra


def _run_program(code, args_fd):
    chunks = []
    while chunk := os.read(args_fd, 1 << 16):
        chunks.append(chunk)
    os.close(args_fd)
    sys.argv = json.loads(b"".join(chunks))
    status = 0
    try:
        exec(code, {"__name__": "__main__", "__builtins__": builtins})
    except SystemExit as exc:
        status = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if exc.code is not None and not isinstance(exc.code, int):
            print(exc.code, file=sys.stderr)
    except BaseException:  # noqa: B036 - the interpreter's own behaviour: traceback, status 1
        import traceback  # noqa: PLC0415
        traceback.print_exc()
        status = 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:  # noqa: B036 - a closed or broken stream changes nothing here
            pass
    os._exit(status & 0xFF)


def _execution(request, received, programs, cap_last, seccomp_program, ready_w):
    """Body of G (pid 1 of the execution's pid namespace); never returns."""
    try:
        _mounts(request["tmp"], request["shm"])
        ready_w = _place_fds(received, request["targets"], ready_w)
        for which, value in request["rlimits"]:
            resource.setrlimit(which, (value, value))
        _drop_capabilities(cap_last)
        _install_seccomp(seccomp_program)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        main = os.fork()
    except BaseException as exc:  # noqa: B036 - reported to the host as a setup failure
        os.write(ready_w, f"{type(exc).__name__}: {exc}".encode()[:500])
        os._exit(SETUP_FAILED)
    if main == 0:
        os.close(ready_w)
        _run_program(programs[request["prog"]], request["args_fd"])
    os.write(ready_w, b"ok")
    os.closerange(0, 1 << 20)  # G holds nothing of the execution's
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            os._exit(SETUP_FAILED)
        if pid == main:
            if os.WIFSIGNALED(status):
                os._exit(128 + os.WTERMSIG(status))
            os._exit(os.waitstatus_to_exitcode(status) & 0xFF)


def _probe_base_tasks():
    """Tasks of this uid RLIMIT_NPROC already counts, beside a forking process."""
    limit = 12  # well above the few supervisors; each probe child costs a fork
    pid = os.fork()
    if pid == 0:
        resource.setrlimit(resource.RLIMIT_NPROC, (limit, limit))
        children = []
        try:
            while len(children) < limit:
                child = os.fork()
                if child == 0:
                    signal.pause()
                    os._exit(0)
                children.append(child)
        except OSError:
            pass
        for child in children:
            os.kill(child, signal.SIGKILL)
            os.waitpid(child, 0)
        os._exit(len(children))
    _, status = os.waitpid(pid, 0)
    made = os.waitstatus_to_exitcode(status)
    return limit - 1 - made


def _load(sources_fd):
    chunks = []
    while chunk := os.read(sources_fd, 1 << 20):
        chunks.append(chunk)
    os.close(sources_fd)
    spec = json.loads(b"".join(chunks))
    for name, text in spec["modules"].items():
        module = type(sys)(name)
        exec(compile(text, f"{name}.py", "exec"), module.__dict__)
        sys.modules[name] = module
    programs = {name: compile(text, f"{name}.py", "exec")
                for name, text in spec["programs"].items()}
    return programs, bytes.fromhex(spec["seccomp"])


def _serve(sock, programs, seccomp_program):
    with open("/proc/sys/kernel/cap_last_cap") as fh:
        cap_last = int(fh.read())
    own_pidns = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
    base = _probe_base_tasks()
    gc.collect()
    gc.freeze()  # forks never traverse (hence never copy) the server's own objects
    sock.send(json.dumps({"ready": True, "base_tasks": base}).encode())
    current = None  # (pid, pidfd) of the running execution's G
    while True:
        waiting = [sock] + ([current[1]] if current else [])
        readable, _, _ = select.select(waiting, [], [])
        if current and current[1] in readable:
            _, status = os.waitpid(current[0], 0)
            os.close(current[1])
            current = None
            rc = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
            sock.send(json.dumps({"exit": rc}).encode())
        if sock not in readable:
            continue
        message, fds, _, _ = socket.recv_fds(sock, 1 << 16, 64)
        if not message:
            return
        request = json.loads(message)
        if "kill" in request:
            if current:
                signal.pidfd_send_signal(current[1], signal.SIGKILL)
            continue
        if current:  # one execution at a time; the host never asks for two
            for fd in fds:
                os.close(fd)
            sock.send(json.dumps({"error": "an execution is still running"}).encode())
            continue
        current = _start(request, fds, programs, cap_last, seccomp_program, own_pidns, sock)


def _start(request, fds, programs, cap_last, seccomp_program, own_pidns, sock):
    ready_r, ready_w = os.pipe()
    _check(_libc.unshare(NEWPID), "unshare(pid)")
    try:
        pid = os.fork()
        if pid == 0:
            os.close(ready_r)
            _execution(request, fds, programs, cap_last, seccomp_program, ready_w)
    finally:
        if _libc.setns(own_pidns, NEWPID) != 0:
            os._exit(SETUP_FAILED)  # cannot serve further executions safely
    os.close(ready_w)
    for fd in fds:
        os.close(fd)
    pidfd = os.pidfd_open(pid)
    chunks = []
    while chunk := os.read(ready_r, 1024):
        chunks.append(chunk)
    os.close(ready_r)
    note = b"".join(chunks)
    if note == b"ok":
        sock.send(json.dumps({"started": pid}).encode())
    else:
        sock.send(json.dumps({"error": note.decode("utf-8", "replace") or "setup died"}).encode())
    return pid, pidfd


def _main():
    sock_fd, sources_fd = int(sys.argv[1]), int(sys.argv[2])
    programs, seccomp_program = _load(sources_fd)
    sock = socket.socket(fileno=sock_fd)
    _check(_libc.unshare(NEWPID), "unshare(pid) for the server")
    server = os.fork()
    if server:  # stays as the sandbox's supervisor of the server; exits with it
        sock.close()
        _, status = os.waitpid(server, 0)
        os._exit(os.waitstatus_to_exitcode(status) & 0xFF)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    _serve(sock, programs, seccomp_program)


if __name__ == "__main__":  # run by ``python -c``; importing it starts nothing
    _main()
