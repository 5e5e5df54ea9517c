"""Writing files so that a crash never leaves a half-written one behind, and telling the temporary
files a crashed or killed writer left from those a running process is still writing.

A temporary file is named ``.<target name>.<pid>-<start>-<token>.tmp`` next to its target: ``pid`` and
``start`` (the process's start time in clock ticks after boot, from /proc; 0 where there is none)
name the writer, so that a reused pid is not taken for it, and ``token`` makes the name unique. The
writer also holds an exclusive ``flock`` on the file until it is renamed into place; the kernel drops
that lock when the writer dies, even by SIGKILL, and it is seen across pid namespaces (containers
sharing a folder). A temporary file counts as abandoned only when both say so: its writer is not
running and nobody holds its lock. Names without a writer (``.<target>.<8 characters>.tmp``, made by
earlier versions, which took no lock) count as abandoned when unlocked.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import stat
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Dict, Iterator, Optional, Tuple

try:
    import fcntl
except ImportError:  # Windows: no lock, and no pid check either (see _writer_running)
    fcntl = None  # type: ignore[assignment]

# Ours, and those of the earlier versions (tempfile.mkstemp's eight characters).
_TEMPORARY = re.compile(r"\.(?P<target>.+)\.(?:(?P<pid>[0-9]+)-(?P<start>[0-9]+)-[0-9a-f]{8}|[a-z0-9_]{8})\.tmp")
_PROC = Path("/proc/self/stat").is_file()
_LOCK_HELD = (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK)
_own_start: Dict[int, int] = {}  # by pid, so that a forked child names itself


def _process_start(pid: int) -> Optional[int]:
    """The start time of the running process ``pid`` (field 22 of /proc/PID/stat), None if none runs.

    Raises OSError or ValueError when /proc cannot say.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = stat[stat.rindex(")") + 2:].split()  # the command name before ")" may hold spaces
    if fields[0] in ("Z", "X"):  # exited, not yet reaped: its files are closed, its locks gone
        return None
    return int(fields[19])


def _writer_id() -> str:
    pid = os.getpid()
    if pid not in _own_start:
        try:
            _own_start[pid] = (_process_start(pid) or 0) if _PROC else 0
        except (OSError, ValueError):
            _own_start[pid] = 0
    return f"{pid}-{_own_start[pid]}"


def _writer_running(pid: int, start: int) -> bool:
    """Whether the process that named a temporary file ``pid``/``start`` still runs (True when unsure)."""
    if _PROC:
        try:
            now = _process_start(pid)
        except (OSError, ValueError):
            return True
        return now is not None and (start == 0 or now == start)
    if os.name == "posix":
        try:
            os.kill(pid, 0)
        except (ProcessLookupError, OverflowError):  # no such pid, or none that big
            return False
        except OSError:  # EPERM: someone else's process
            return True
        return True
    return True  # no cheap way to tell; os.kill would end the process on Windows


def temporary_target(path: Path) -> Optional[str]:
    """The name of the file a temporary file of ``atomic_write`` is for, None if ``path`` is not one."""
    found = _TEMPORARY.fullmatch(Path(path).name)
    return found["target"] if found else None


def _lock(fd: int, wait: bool) -> Optional[bool]:
    """Take the exclusive lock of ``fd``: True when taken, False when another holds it, None if unsupported."""
    if fcntl is None:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except OSError as exc:
        if exc.errno in _LOCK_HELD:
            return False
        return None  # e.g. ENOLCK: a file system without locks; the pid decides
    return True


def _abandoned(path: Path, remove: bool) -> bool:
    """Whether the temporary file ``path``'s writer is gone; with ``remove``, delete it then (under its lock)."""
    found = _TEMPORARY.fullmatch(path.name)
    if found is None:
        return False
    if found["pid"] is not None and _writer_running(int(found["pid"]), int(found["start"])):
        return False
    try:
        fd = os.open(path, os.O_RDWR | getattr(os, "O_NOFOLLOW", 0))
    except OSError:  # gone (renamed into place), a link, or not ours to open: leave it
        return False
    try:
        if _lock(fd, wait=False) is False:
            return False
        if remove:
            try:
                os.unlink(path)
            except FileNotFoundError:  # another run removed it first
                return False
        return True
    finally:
        os.close(fd)


def temporary_in_use(path: Path) -> bool:
    """Whether a running process is writing the temporary file ``path`` (False once it is gone)."""
    path = Path(path)
    return path.exists() and not _abandoned(path, remove=False)


def remove_abandoned(path: Path) -> bool:
    """Delete the temporary file ``path`` if its writer is gone (killed or crashed); True if deleted."""
    return _abandoned(Path(path), remove=True)


def _create_temporary(path: Path) -> Tuple[Path, Optional[int]]:
    """Create and lock a new temporary file next to ``path``; the open descriptor (if any) keeps the lock."""
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{_writer_id()}-{secrets.token_hex(4)}.tmp"
        try:
            fd = os.open(tmp, flags, 0o666)  # the permissions a plain open() gives, after the umask
        except FileExistsError:
            continue
        if _lock(fd, wait=True) is None:
            os.close(fd)  # nothing to hold, and Windows cannot rename a file that is open
            return tmp, None
        return tmp, fd
    raise FileExistsError(f"no free temporary file name next to {path}")


@contextmanager
def atomic_target(path: Path) -> Iterator[str]:
    """Give a new temporary path next to ``path`` to write; rename it onto ``path`` if the block succeeds.

    The temporary file exists (and is locked by this process) from the start of the block, so other
    processes can see that ``path`` is being written; on any error it is deleted.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp, fd = _create_temporary(path)
    try:
        yield str(tmp)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    finally:
        if fd is not None:  # closing drops the lock, only now that the file is in place or deleted
            os.close(fd)


def atomic_write(path: Path, write: Callable[[str], None]) -> None:
    """Call ``write(temporary_path)``, then rename the finished file onto ``path``."""
    with atomic_target(path) as tmp:
        write(tmp)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


# What a file that is not a regular one is, by its stat mode.
_FILE_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
               (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def file_kind(mode: int) -> str:
    """A stat mode in words: "a regular file", "a directory", "a FIFO", "a character device", ..."""
    if stat.S_ISREG(mode):
        return "a regular file"
    return next((kind for test, kind in _FILE_KINDS if test(mode)), "a special file")
