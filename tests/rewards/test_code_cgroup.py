"""cgroup v2 bound of a sandbox: finding a delegated subtree, and the launch/kill lifecycle.

Whether the host delegates a cgroup v2 subtree with the memory controller decides the mode;
both tests here run real code on whatever this host is (the machine this was written on has a
hybrid v1/v2 hierarchy without a v2 memory controller, so the rlimit budget applies there and
``test_code_memory`` measures it). Parsing is checked on recorded /proc texts of three layouts.
"""

from __future__ import annotations

import os
import subprocess

from rewards.code import cgroup
from rewards.code.sandbox import Limits, budget, kill, launch

V2_MOUNT = "30 23 0:26 / /sys/fs/cgroup rw,nosuid,relatime shared:4 - cgroup2 cgroup2 rw\n"
HYBRID_MOUNT = ("35 25 0:30 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n"
                "36 25 0:31 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n")
# Inside a container whose cgroup namespace root is a bind of the host's /kubepods/pod1/c1.
CONTAINER_MOUNT = "1 0 0:27 /kubepods/pod1/c1 /sys/fs/cgroup ro - cgroup2 cgroup2 rw\n"


def test_parse_own_dir_on_recorded_layouts() -> None:
    assert cgroup.parse_own_dir("0::/system.slice/rlsys.service/main\n", V2_MOUNT) == \
        "/sys/fs/cgroup/system.slice/rlsys.service/main"
    assert cgroup.parse_own_dir("4:memory:/x\n0::/\n", HYBRID_MOUNT) == "/sys/fs/cgroup/unified"
    assert cgroup.parse_own_dir("0::/kubepods/pod1/c1/leaf\n", CONTAINER_MOUNT) == \
        "/sys/fs/cgroup/leaf"
    assert cgroup.parse_own_dir("4:memory:/x\n", HYBRID_MOUNT) is None  # v1 only
    assert cgroup.parse_own_dir("0::/a\n", "36 25 0:31 / /m rw - cgroup cgroup rw\n") is None


def test_delegated_parent_is_a_writable_memory_subtree_or_none() -> None:
    parent = cgroup.delegated_parent()
    if parent is not None:
        with open(os.path.join(parent, "cgroup.subtree_control")) as f:
            assert "memory" in f.read().split()
        assert os.access(parent, os.W_OK)


def test_launch_uses_a_cgroup_exactly_when_one_is_delegated_and_removes_it() -> None:
    parent = cgroup.delegated_parent()
    read_fd, write_fd = os.pipe()
    proc = launch(["-c", "import resource; print(resource.getrlimit(resource.RLIMIT_AS)[0])"],
                  Limits(memory_mb=512), stdin=subprocess.DEVNULL, stdout=write_fd,
                  stderr=subprocess.DEVNULL)
    os.close(write_fd)
    group = proc.cgroup
    with os.fdopen(read_fd) as pipe:
        address_space = int(pipe.read())
    kill(proc)
    assert (group is not None) == (parent is not None)
    plan = budget(Limits(memory_mb=512), in_cgroup=group is not None)
    assert address_space == plan.process_mb << 20
    if group is not None:
        assert not os.path.exists(group) and proc.cgroup is None
    else:
        assert address_space < 512 << 20  # split over the processes RLIMIT_NPROC allows
