"""What the benchmarks that start `securex serve` share: a free port, waiting for the
server to be ready, the memory (current and peak) and CPU time of its processes, and
stopping it."""

from __future__ import annotations

import http.client
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path


def stop(proc: subprocess.Popen[bytes]) -> None:
    """The server and its gunicorn workers: the process group this script started."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(port: int, proc: subprocess.Popen[bytes], log: Path, seconds: float = 60) -> None:
    """Until GET /readyz answers 200 (the database reached, the keys loaded); exits
    with the server's log if it stops or takes longer than `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            conn.request("GET", "/readyz")
            response = conn.getresponse()
            response.read()
            if response.status == 200:
                return
        except (OSError, http.client.HTTPException):
            pass
        finally:
            conn.close()
        if time.monotonic() > deadline or proc.poll() is not None:
            raise SystemExit("securex serve did not start:\n" + log.read_text(errors="replace"))
        time.sleep(0.2)


def children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (a gunicorn master's workers), by pid."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid …; comm may hold spaces and parentheses.
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return sorted(found)


def _status_bytes(pid: int, field: str) -> int | None:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    match = re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) * 1024 if match else None


def rss(pid: int) -> int | None:
    """The resident size (VmRSS) of `pid` in bytes, or None when it is gone."""
    return _status_bytes(pid, "VmRSS")


def peak_rss(pid: int) -> int | None:
    """The peak resident size (VmHWM) of `pid` in bytes since it started or since
    `reset_peak`, or None when it is gone."""
    return _status_bytes(pid, "VmHWM")


def reset_peak(pid: int) -> None:
    """Set the peak resident size (VmHWM) of `pid` back to its current size."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of `pid` (all its threads) so far, or None when gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    # After "(comm)": state is field 3 of proc(5), utime 14 and stime 15.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
