"""``lama-fast serve`` as the tests start it: a real process on a free loopback port, stopped by SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, Optional, Tuple

import httpx

SERVE = [sys.executable, "-m", "lama_fast.cli", "serve"]


def free_port() -> int:
    """A TCP port nothing listens on now (the kernel's pick on the loopback address)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """A running ``lama-fast serve``; its stderr goes to a file read back by ``log()``."""

    def __init__(self, proc: subprocess.Popen, url: str, log_path: Path) -> None:
        self.proc = proc
        self.url = url
        self.log_path = log_path
        self._log = ""

    def log(self) -> str:
        try:
            self._log = self.log_path.read_text(errors="replace")
        except FileNotFoundError:  # removed by stop(): what it held then
            pass
        return self._log

    def client(self, **kwargs) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=kwargs.pop("timeout", 120), **kwargs)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> Tuple[int, str]:
        """Send ``sig`` and wait for the process to end; its return code and everything it wrote to stderr."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        log = self.log()
        self.log_path.unlink(missing_ok=True)
        return self.proc.returncode, log


def start_server(*args: str, host: str = "127.0.0.1", port: Optional[int] = None,
                 extra_env: Optional[Dict[str, str]] = None, timeout: float = 120,
                 ready_url: Optional[str] = None) -> Server:
    """Start ``lama-fast serve ARGS --host HOST --port PORT`` and wait until /healthz answers 200.

    ``ready_url`` is the address to poll when ``host`` is not one to connect to (0.0.0.0).
    Raises RuntimeError with the server's stderr when it exits or is not ready in ``timeout`` seconds."""
    port = port or free_port()
    env = dict(os.environ, **(extra_env or {}))
    env.setdefault("PYTHONUNBUFFERED", "1")
    log = Path(tempfile.mkstemp(prefix="lama-fast-serve-", suffix=".log")[1])
    with open(log, "wb") as err:
        proc = subprocess.Popen([*SERVE, *args, "--host", host, "--port", str(port)], stdout=err,
                                stderr=subprocess.STDOUT, env=env)
    url = f"http://{host}:{port}" if ready_url is None else ready_url.format(port=port)
    server = Server(proc, url, log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"lama-fast serve exited with {proc.returncode}:\n{server.log()}")
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    server.stop(signal.SIGKILL)
    raise RuntimeError(f"lama-fast serve was not ready after {timeout} s:\n{server.log()}")
