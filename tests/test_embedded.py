"""The embedded server stops when the last process using it ends, even after one was killed."""

import os
import signal
import subprocess
import sys
import time

import psutil

ATTACH = "from dbsweep.embedded import embedded_url; embedded_url('x')"


def _servers(home) -> list[psutil.Process]:
    return [p for p in psutil.process_iter(["name", "cmdline"])
            if p.info["name"] == "postgres" and str(home) in " ".join(p.info["cmdline"] or [])]


def test_a_killed_process_does_not_keep_the_server_running(tmp_path):
    env = {**os.environ, "DBSWEEP_HOME": str(tmp_path)}
    killed = subprocess.Popen([sys.executable, "-c", ATTACH + "; import time; time.sleep(60)"], env=env)
    try:
        deadline = time.monotonic() + 30
        while not (tmp_path / "pgdata" / ".handle_pids.json").exists() or not _servers(tmp_path):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        time.sleep(0.5)
    finally:
        killed.send_signal(signal.SIGKILL)
        killed.wait()
    assert _servers(tmp_path), "the server runs on after its only user was killed"
    subprocess.run([sys.executable, "-c", ATTACH], env=env, check=True, timeout=60)  # a later user, exiting
    deadline = time.monotonic() + 10
    while _servers(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _servers(tmp_path)
