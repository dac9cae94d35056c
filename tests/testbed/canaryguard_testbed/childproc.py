"""Child processes of the local stack: started with their output in a log file, tied to the
life of the parent (no orphans if the test runner dies), stopped with SIGTERM then SIGKILL."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

_PR_SET_PDEATHSIG = 1


class ChildProcessError(RuntimeError):
    """A child process of the local stack failed to start or to become ready."""


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: ask the kernel to SIGTERM it when the parent dies.
    with contextlib.suppress(OSError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on `host` a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def spawn(
    args: Sequence[str],
    log_path: Path,
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start `args` with stdout and stderr appended to `log_path`, in its own session, and
    killed by the kernel if this process dies."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        return subprocess.Popen(
            list(args),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )


def python_module_args(module: str, *args: str) -> list[str]:
    """Command line that runs `python -m module args...` with this interpreter."""
    return [sys.executable, "-m", module, *args]


def terminate(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> int | None:
    """Stop `proc`: SIGTERM, then SIGKILL after `timeout` seconds. Returns its exit code."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGCONT)  # a frozen process cannot act on SIGTERM
            proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait(5)
    return proc.returncode


def log_tail(log_path: Path, lines: int = 30) -> str:
    """The last `lines` lines of a log file, for error messages."""
    try:
        text = log_path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def wait_for_port_file(
    path: Path, proc: subprocess.Popen[bytes], log_path: Path, timeout: float = 20.0
) -> int:
    """Wait until a child wrote its listening port to `path` (see `write_port_file`)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ChildProcessError(
                f"{proc.args!r} exited with code {proc.returncode} before it was ready; "
                f"log {log_path}:\n{log_tail(log_path)}"
            )
        with contextlib.suppress(OSError, ValueError):
            text = path.read_text().strip()
            if text:
                return int(text)
        time.sleep(0.02)
    raise ChildProcessError(
        f"{proc.args!r} was not ready after {timeout:.0f}s; log {log_path}:\n{log_tail(log_path)}"
    )


def write_port_file(path: Path, port: int) -> None:
    """Atomically publish a listening port for `wait_for_port_file`."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(f"{port}\n")
    os.replace(tmp, path)


def http_ok(url: str, timeout: float = 1.0) -> bool:
    """True when GET `url` answers 200."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - loopback URL
            return int(resp.status) == 200
    except (OSError, urllib.error.URLError):
        return False
