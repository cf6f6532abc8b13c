"""Processes and virtual environments for the bench: start, wait, always stop.

Every process is started in a session of its own, so that a Ctrl-C at the
terminal reaches only run.py, which then stops them itself: each by its own
process group id, SIGTERM first and SIGKILL after a grace period.
"""

import hashlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

_started: list[subprocess.Popen] = []


def spawn(cmd: list[str], *, cwd: Path, env: dict[str, str], log: Path) -> subprocess.Popen:
    """Start `cmd` in its own session, output appended to `log`; stopped by stop_all()."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        out.write(f"\n=== {time.strftime('%H:%M:%S')} {' '.join(map(str, cmd))}\n".encode())
        out.flush()
        process = subprocess.Popen(  # noqa: S603 - our own commands, no shell
            [str(c) for c in cmd],
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    _started.append(process)
    return process


def run_captured(cmd: list[str], *, cwd: Path, env: dict[str, str], timeout: float, log: Path):
    """Run `cmd` to completion; stdout is returned, stderr appended to `log`.

    The child runs in its own session and is stopped (by its group id) if
    this process is interrupted or the timeout passes.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as err:
        err.write(f"\n=== {time.strftime('%H:%M:%S')} {' '.join(map(str, cmd))}\n".encode())
        err.flush()
        process = subprocess.Popen(  # noqa: S603 - our own commands, no shell
            [str(c) for c in cmd],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=err,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        _started.append(process)
        try:
            stdout, _ = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            stop(process)
            stdout, _ = process.communicate()
            return None, f"timed out after {timeout:.0f} s", stdout.decode(errors="replace")
        finally:
            if process.poll() is None:
                stop(process)
            _started.remove(process)
    return process.returncode, None, stdout.decode(errors="replace")


def stop(process: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM the process's group (it leads it), then SIGKILL after `grace` seconds."""
    if process.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def stop_all() -> None:
    """Stop every process spawn() started that still runs, newest first."""
    while _started:
        stop(_started.pop())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(port: int, process: subprocess.Popen, timeout: float = 60.0) -> None:
    """Wait until the server on `port` answers any HTTP request (any status)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"exited with code {process.returncode} before serving")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/", headers={"Host": "127.0.0.1"})
            conn.getresponse().read()
            conn.close()
            return
        except OSError as exc:
            last = exc
            time.sleep(0.2)
    raise RuntimeError(f"no HTTP answer on port {port} within {timeout:.0f} s ({last})")


def ensure_venv(venv: Path, requirements: list[Path], log: Path) -> Path:
    """A venv at `venv` with `requirements` installed; reinstalled when they change."""
    digest = hashlib.sha256(sys.version.encode())
    for req in requirements:
        digest.update(req.read_bytes())
    stamp = venv / ".bench-stamp"
    python = venv / "bin" / "python"
    if python.exists() and stamp.exists() and stamp.read_text() == digest.hexdigest():
        return python
    print(
        f"bench: installing {venv.name} venv from {', '.join(str(r) for r in requirements)}",
        flush=True,
    )
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        if not python.exists():
            create = [sys.executable, "-m", "venv", str(venv)]
            subprocess.run(create, check=True, stdout=out, stderr=out)  # noqa: S603
        for req in requirements:
            subprocess.run(  # noqa: S603
                [str(python), "-m", "pip", "install", "--quiet", "-r", str(req)],
                check=True,
                stdout=out,
                stderr=out,
            )
    stamp.write_text(digest.hexdigest())
    return python


def cpu_seconds(pid: int) -> float | None:
    """user + system CPU seconds of one process, from /proc."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def rss_kib(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            return next((int(line.split()[1]) for line in f if line.startswith("VmRSS:")), None)
    except OSError:
        return None
