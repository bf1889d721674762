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


def test_sigterm_to_a_long_running_command_leaves_no_server(tmp_path):
    """`dbsweep metrics` serves until stopped; a SIGTERM (a service manager's stop) ends it like
    Ctrl-C, so it gives back its hold on the embedded server, which then stops."""
    from tests.conftest import write_policy
    from tests.helpers import free_port

    home = tmp_path / "home"
    env = {**os.environ, "DBSWEEP_HOME": str(home)}
    path = write_policy(tmp_path, '[[phase]]\nname = "p"\nkind = "retention"\ntable = "t"\ntime_column = "c"\n'
                                  'older_than = "7 days"\n', "sigterm_db")
    port = free_port()
    served = subprocess.Popen([sys.executable, "-m", "dbsweep.cli", "metrics", str(path), "--listen",
                               f"127.0.0.1:{port}"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_until_it_answers(served, f"http://127.0.0.1:{port}/metrics", 60)
        assert _servers(home)
    finally:
        served.send_signal(signal.SIGTERM)
        _, stderr = served.communicate(timeout=30)
    assert served.returncode == 4 and "interrupted" in stderr, (served.returncode, stderr)
    deadline = time.monotonic() + 15
    while _servers(home) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = _servers(home)
    for process in left:  # not left behind even when the test fails
        process.terminate()
    assert not left, "the embedded server runs on after its only user was stopped"


def test_sigterm_to_the_ui_stops_dagster_and_the_server(tmp_path):
    """`dbsweep ui` started in the background by a script (SIGINT ignored, as a shell does), then
    sent SIGTERM: dagster dev's whole process group (webserver, daemon, code servers) is stopped
    with it, and the embedded server stops."""
    from tests.conftest import ROOT
    from tests.helpers import free_port

    home, dagster_home = tmp_path / "home", tmp_path / "dagster"
    env = {**os.environ, "DBSWEEP_HOME": str(home), "DAGSTER_HOME": str(dagster_home)}
    port = free_port()
    ui = subprocess.Popen([sys.executable, "-m", "dbsweep.cli", "ui", "--port", str(port)], env=env, cwd=ROOT,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        _wait_until_it_answers(ui, f"http://127.0.0.1:{port}/server_info", 180)
    finally:
        ui.send_signal(signal.SIGTERM)
        try:
            ui.wait(timeout=90)
            stopped = True
        except subprocess.TimeoutExpired:
            ui.kill()
            ui.wait()
            stopped = False

    def left() -> list[psutil.Process]:
        mine = [p for p in psutil.process_iter(["cmdline"]) if str(dagster_home) in " ".join(p.info["cmdline"] or [])
                or f"dev -w {ROOT / 'workspace.yaml'} -h 127.0.0.1 -p {port}" in " ".join(p.info["cmdline"] or [])]
        return mine + _servers(home)

    deadline = time.monotonic() + 20
    while left() and time.monotonic() < deadline:
        time.sleep(0.2)
    remaining = left()
    for process in remaining:  # not left behind even when the test fails
        process.kill()
    assert stopped, "dbsweep ui did not end within 90 s of SIGTERM"
    assert not remaining, [" ".join(p.info["cmdline"] or [])[:80] for p in remaining]
    assert ui.returncode == 4  # as every command ends on a signal: interrupted, resumable


def _wait_until_it_answers(process: subprocess.Popen, url: str, seconds: float) -> None:
    """Until `url` answers; failing if the process ends first or it takes longer than `seconds`."""
    import urllib.request

    deadline = time.monotonic() + seconds
    while True:
        assert process.poll() is None, f"exited with {process.returncode} before {url} answered"
        assert time.monotonic() < deadline, f"{url} did not answer within {seconds:g} s"
        try:
            urllib.request.urlopen(url, timeout=5).read()
            return
        except OSError:
            time.sleep(0.2)
