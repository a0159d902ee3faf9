"""Ends a local Ray instance when the command that started it dies, however it dies.

``ray.init()`` without an address starts a local instance whose processes (GCS, raylet, the
dashboard and runtime-env agents, workers) outlive a driver that is killed with SIGKILL. A job
command that starts one also starts this watcher, detached (start_new_session):

    python -m hmer_runtime.serving.ray_reaper DRIVER_PID SESSION_DIR

It polls the driver; when the driver is gone, it sends SIGTERM, then SIGKILL, to every process
whose command line names the instance's session folder, and exits. Nothing else is touched:
another Ray instance on the machine has its own session folder.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

POLL_S = 0.5
GRACE_S = 3.0


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie (dead, not yet reaped by its parent) counts as gone
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][:1] != "Z"
    except OSError:
        return False


def session_processes(session_dir: str, skip: int) -> list[int]:
    """Processes whose command line names ``session_dir`` (this watcher's own ``skip`` aside)."""
    name = os.path.basename(session_dir.rstrip("/")).encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in (skip, os.getpid()):
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if name and name in cmdline:
            found.append(int(entry.name))
    return found


def reap(session_dir: str) -> int:
    """SIGTERM, then SIGKILL after a grace period, to the instance's processes; how many there were."""
    pids = session_processes(session_dir, os.getpid())
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.monotonic() + GRACE_S
        while sig == signal.SIGTERM and time.monotonic() < deadline and any(alive(p) for p in pids):
            time.sleep(0.1)
    return len(pids)


def watch(driver: int, session_dir: str) -> None:
    while alive(driver):
        time.sleep(POLL_S)
    reap(session_dir)


def start(session_dir: str) -> subprocess.Popen:
    """Start the watcher for this process and the local instance of ``session_dir``."""
    return subprocess.Popen([sys.executable, "-m", "hmer_runtime.serving.ray_reaper", str(os.getpid()), session_dir],
                            start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


if __name__ == "__main__":
    watch(int(sys.argv[1]), sys.argv[2])
