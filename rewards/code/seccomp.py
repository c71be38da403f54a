"""A seccomp filter (classic BPF, for ``bwrap --seccomp``) refusing memory no limit would count.

RLIMIT_AS counts a process's mappings and ``size=`` caps each tmpfs, but some kernel objects
hold memory outside both: a memfd (``memfd_create``, ``memfd_secret``) lives on an internal,
uncapped shmem mount and stays alive while a descriptor or an in-flight socket message holds it;
System V shared memory segments and message queues (``shmget``, ``msgget``) outlive every
mapping in the sandbox's IPC namespace; POSIX message queues (``mq_open``) and ``io_uring``
registered buffers likewise. The filter answers these syscalls with EPERM, so no sandbox can
hold memory outside ``memory_mb`` through them. Syscalls of a foreign ABI (x32, i386 via
``int 0x80``) get ENOSYS: the syscall numbers below would not mean the same thing there.

``program()`` returns the filter for this machine's architecture (x86_64 or aarch64), or None
elsewhere (then the sandbox runs without it and says so in ``rewards.code.sandbox``). This
module builds bytes only; it does not install anything (bwrap does, just before ``exec``).
"""

from __future__ import annotations

import functools
import platform
import struct

# struct seccomp_data: int nr at offset 0, __u32 arch at offset 4.
_LD_W_ABS, _JEQ_K, _JGE_K, _RET_K = 0x20, 0x15, 0x35, 0x06
_ALLOW, _ERRNO = 0x7FFF0000, 0x00050000
_EPERM, _ENOSYS = 1, 38
_X32_BIT = 0x40000000

# (AUDIT_ARCH value, {syscall name: number}) per machine; numbers from the kernel's tables
# (arch/x86/entry/syscalls/syscall_64.tbl, include/uapi/asm-generic/unistd.h).
_ARCHES = {
    "x86_64": (0xC000003E, {"shmget": 29, "msgget": 68, "mq_open": 240, "memfd_create": 319,
                            "io_uring_setup": 425, "memfd_secret": 447, "add_key": 248,
                            "request_key": 249, "keyctl": 250}),
    "aarch64": (0xC00000B7, {"mq_open": 180, "msgget": 186, "shmget": 194, "memfd_create": 279,
                             "io_uring_setup": 425, "memfd_secret": 447, "add_key": 217,
                             "request_key": 218, "keyctl": 219}),
}
DENIED = ("memfd_create", "memfd_secret", "shmget", "msgget", "mq_open", "io_uring_setup")
# Executions of one fork server share a uid and a user namespace, hence its keyrings: a key one
# execution adds would be readable by the next. Their extra filter refuses the keyring calls.
SHARED_UID_DENIED = ("add_key", "request_key", "keyctl")


def _insn(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k)


def build(audit_arch: int, numbers: dict[str, int], x32_bit: bool,
          names: tuple[str, ...] = DENIED) -> bytes:
    """The filter: foreign ABI -> ENOSYS, a syscall in ``names`` -> EPERM, anything else runs."""
    denied = sorted(numbers[name] for name in names)
    # Layout: [0] load arch, [1] arch check, [2] load nr, [x32 check], one JEQ per denied
    # number, then RET ALLOW, RET EPERM, RET ENOSYS. Jump offsets count the insns skipped.
    body_len = (1 if x32_bit else 0) + len(denied)
    prog = [_insn(_LD_W_ABS, 4),
            _insn(_JEQ_K, audit_arch, 0, 1 + body_len + 2),  # foreign arch -> ENOSYS
            _insn(_LD_W_ABS, 0)]
    if x32_bit:
        prog.append(_insn(_JGE_K, _X32_BIT, len(denied) + 2, 0))  # x32 ABI -> ENOSYS
    for i, number in enumerate(denied):
        prog.append(_insn(_JEQ_K, number, len(denied) - i, 0))  # -> EPERM
    prog += [_insn(_RET_K, _ALLOW), _insn(_RET_K, _ERRNO | _EPERM),
             _insn(_RET_K, _ERRNO | _ENOSYS)]
    return b"".join(prog)


@functools.cache
def program(names: tuple[str, ...] = DENIED) -> bytes | None:
    """The compiled filter for this machine, or None on an architecture not listed here.
    ``names``: the syscalls refused (``DENIED`` for every sandbox; ``SHARED_UID_DENIED`` is
    stacked on it for the executions of a fork server)."""
    machine = platform.machine()
    if machine not in _ARCHES:
        return None
    audit_arch, numbers = _ARCHES[machine]
    return build(audit_arch, numbers, x32_bit=machine == "x86_64", names=names)
