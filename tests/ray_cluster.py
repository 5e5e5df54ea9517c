"""A real Ray cluster on this machine for the tests: a head and more nodes started with the ``ray`` CLI.

The nodes are joined and driven at 127.0.0.1:PORT (Ray names them by the machine's own address), keep
their files under the cluster's temporary folder and use token authentication with a token made for the
cluster. ``stop()`` ends exactly the processes the cluster started, and no other: they are told apart by
a variable of their environment (``MEMBER_MARK``, which every process a node starts inherits), by the
process groups of the ``ray start`` commands and by descent from the cluster's raylets. ``ray stop`` is
not used: it ends every Ray process of the machine, those of other clusters included.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Sequence

RAY = Path(sys.executable).with_name("ray")
HOST = "127.0.0.1"
MEMBER_MARK = "LAMA_FAST_TEST_RAY_CLUSTER"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


@dataclass(frozen=True)
class Process:
    pid: int
    ppid: int
    pgid: int
    cmdline: str  # for a Ray worker, the title Ray gives it: ray::IDLE, ray::MapWorker(...)...


def processes() -> Dict[int, Process]:
    """The running processes of this machine, from /proc (zombies left out)."""
    found: Dict[int, Process] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # it ended meanwhile
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if fields[0] not in ("Z", "X"):
            found[int(entry)] = Process(int(entry), int(fields[1]), int(fields[2]), cmdline.strip())
    return found


def descendants(roots: Sequence[int], table: Dict[int, Process]) -> List[int]:
    """The processes under ``roots`` (children, their children...), roots not included."""
    children: Dict[int, List[int]] = {}
    for process in table.values():
        children.setdefault(process.ppid, []).append(process.pid)
    found: List[int] = []
    frontier = list(roots)
    while frontier:
        for child in children.get(frontier.pop(), []):
            if child not in found:
                found.append(child)
                frontier.append(child)
    return found


def _environment_has(pid: int, entry: bytes) -> bool:
    try:
        return entry in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:  # gone, or another user's
        return False


@dataclass
class RayCluster:
    """A running cluster: its ``address`` (HOST:PORT) and the environment its nodes were started with."""

    temp_dir: Path
    port: int
    env: Dict[str, str]
    groups: List[int] = field(default_factory=list)  # the process groups of the `ray start` commands
    log: List[str] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    def _is_raylet(self, process: Process) -> bool:
        return "/raylet/raylet " in process.cmdline and str(self.temp_dir) in process.cmdline

    def raylets(self) -> List[Process]:
        return [p for p in processes().values() if self._is_raylet(p)]

    def running(self, table: Dict[int, Process]) -> List[int]:
        """This cluster's processes in ``table``: the daemons and the raylets' workers."""
        daemons = [pid for pid, p in table.items() if p.pgid in self.groups or self._is_raylet(p)]
        return sorted(set(daemons) | set(descendants(daemons, table)))

    def actors(self, title: str) -> List[Process]:
        """This cluster's worker processes whose title (their command line) contains ``title``."""
        table = processes()
        return [table[pid] for pid in self.running(table) if title in table[pid].cmdline]

    def members(self) -> List[int]:
        """Every running process of this cluster, those that lost their parent included."""
        table = processes()
        mark = f"{MEMBER_MARK}={self.temp_dir}".encode()
        marked = [pid for pid in table if pid != os.getpid() and _environment_has(pid, mark)]
        return sorted(set(self.running(table)) | set(marked))

    def start_node(self, *options: str, timeout: float = 120) -> None:
        command = [str(RAY), "start", "--num-cpus", "1", "--disable-usage-stats",
                   "--object-store-memory", str(100 * 1024 * 1024), *options]
        process = subprocess.Popen(command, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   text=True, start_new_session=True)
        self.groups.append(process.pid)
        try:
            output, _ = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            output, _ = process.communicate()
            raise RuntimeError(f"{' '.join(command)} did not finish in {timeout} s:\n{output}") from None
        self.log.append(output)
        if process.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed ({process.returncode}):\n{output}")

    def wait_for_nodes(self, count: int, timeout: float = 60) -> None:
        """Until ``count`` raylets of this cluster run."""
        deadline = time.monotonic() + timeout
        while len(self.raylets()) < count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{len(self.raylets())} of {count} nodes running after {timeout} s")
            time.sleep(0.2)

    def stop(self, timeout: float = 30) -> List[Process]:
        """SIGKILL every process of the cluster; those still running after ``timeout`` (none, normally)."""
        deadline = time.monotonic() + timeout
        while True:
            members = self.members()
            for pid in members:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            if not members or time.monotonic() > deadline:
                table = processes()
                return [table[pid] for pid in members if pid in table]
            time.sleep(0.2)


def start_cluster(temp_dir: Path, nodes: int = 2, timeout: float = 120) -> RayCluster:
    """A head and ``nodes - 1`` more nodes of one CPU each; all stopped again if one fails to start."""
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32),
           MEMBER_MARK: str(temp_dir)}
    env.pop("RAY_ADDRESS", None)
    cluster = RayCluster(temp_dir=temp_dir, port=free_port(), env=env)
    try:
        cluster.start_node("--head", "--port", str(cluster.port), "--temp-dir", str(temp_dir),
                           "--include-dashboard=false", timeout=timeout)
        for _ in range(nodes - 1):
            cluster.start_node("--address", cluster.address, timeout=timeout)
        cluster.wait_for_nodes(nodes, timeout=timeout)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _reread_ray_settings() -> None:
    """Make an imported Ray see the environment again: it reads RAY_AUTH_MODE when it is imported and
    keeps the first token it reads (Ray does the same when it turns token authentication on itself)."""
    if "ray" not in sys.modules:
        return
    from ray._raylet import AuthenticationTokenLoader, Config

    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


@contextmanager
def driver_of(cluster: RayCluster) -> Iterator[None]:
    """This process's environment set for driving ``cluster`` (its token, no RAY_ADDRESS), then restored."""
    names = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_ADDRESS")
    before = {name: os.environ.get(name) for name in names}
    os.environ.update(RAY_AUTH_MODE=cluster.env["RAY_AUTH_MODE"], RAY_AUTH_TOKEN=cluster.env["RAY_AUTH_TOKEN"])
    os.environ.pop("RAY_ADDRESS", None)
    _reread_ray_settings()
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        _reread_ray_settings()
