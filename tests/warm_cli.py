"""The tests' `dbsweep` commands, each a process of its own, forked from a warm interpreter.

Four CLI calls out of five spent most of their time importing (Great Expectations alone is about
four seconds of CPU). One zygote per pytest worker imports what the CLI imports, then forks a
child per command: the child gets the command's arguments, environment, working directory and
stdout/stderr pipes, runs `dbsweep.cli.main()` and exits as the interpreter would (non-daemon
threads joined, atexit handlers run, streams flushed). The zygote never connects to anything and
runs no thread, so a child starts as clean as `python -m dbsweep.cli`, minus the imports.
DBSWEEP_TEST_FRESH_CLI=1 makes every call a fresh interpreter instead.

Protocol over a UNIX socket: the client sends one JSON line (argv, env, cwd) with its two pipe
ends attached (SCM_RIGHTS); the zygote answers `{"pid": …}` once forked and `{"status": …}` (the
exit code, negative for a signal, as subprocess reports it) when the child has ended."""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PRELOADED = ("dbsweep.cli", "dbsweep.demo_run", "dbsweep.fleet", "dbsweep.discover", "expectations.offline",
             "pandas", "pyarrow.parquet", "psycopg", "pymssql", "sqlalchemy.dialects.postgresql.psycopg",
             "sqlalchemy.dialects.mssql.pymssql", "sqlalchemy.dialects.sqlite")


# --- the zygote -----------------------------------------------------------------------------

def serve(path: str) -> None:
    import importlib

    for name in PRELOADED:
        importlib.import_module(name)
    from expectations.runner import _gx

    _gx()
    assert threading.active_count() == 1, "a preloaded module started a thread: forking it would be unsafe"
    parent = os.getppid()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    print("ready", flush=True)
    waiting: dict[int, tuple[int, socket.socket]] = {}  # pidfd -> (pid, the client's connection)
    while os.getppid() == parent:  # the worker that started it is gone: so is the zygote
        ready, _, _ = select.select([listener, *waiting], [], [], 1.0)
        for fd in ready:
            if fd is listener:
                _fork_one(listener, waiting)
            else:
                pid, connection = waiting.pop(fd)
                _, status = os.waitpid(pid, 0)
                os.close(fd)
                _answer(connection, {"status": os.waitstatus_to_exitcode(status)})
                connection.close()


def _fork_one(listener: socket.socket, waiting: dict) -> None:
    connection, _ = listener.accept()
    message, fds, _, _ = socket.recv_fds(connection, 1 << 20, 2)
    request = json.loads(message)
    pid = os.fork()
    if pid == 0:
        listener.close()
        connection.close()
        _run_command(request, *fds)
    for fd in fds:
        os.close(fd)
    waiting[os.pidfd_open(pid)] = (pid, connection)
    _answer(connection, {"pid": pid})


def _answer(connection: socket.socket, message: dict) -> None:
    try:
        connection.sendall((json.dumps(message) + "\n").encode())
    except OSError:
        pass  # the client gave up (its timeout); the child is reaped all the same


def _run_command(request: dict, stdout_fd: int, stderr_fd: int) -> None:
    """In the child: become `python -m dbsweep.cli ARGS` and never return."""
    import signal

    code = 1
    try:
        devnull = os.open(os.devnull, os.O_RDONLY)
        for source, target in ((devnull, 0), (stdout_fd, 1), (stderr_fd, 2)):
            os.dup2(source, target)
            os.close(source)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.environ.clear()
        os.environ.update(request["env"])
        os.chdir(request["cwd"])
        import dbsweep.cli as cli

        sys.argv = [cli.__file__, *request["argv"]]
        try:
            cli.main()
            code = 0
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
        except KeyboardInterrupt:
            code = 130
        except BaseException:
            import traceback

            traceback.print_exc()
            code = 1
        threading._shutdown()  # as the interpreter's own exit: wait for non-daemon threads
        import atexit

        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except BaseException:
                pass
        os._exit(code)


# --- the client (the pytest worker) ----------------------------------------------------------

class WarmCli:
    def __init__(self) -> None:
        self.folder = tempfile.mkdtemp(prefix="dbsweep-warm-")
        self.path = os.path.join(self.folder, "zygote")
        self.log = open(os.path.join(self.folder, "zygote.log"), "w")
        self.zygote = subprocess.Popen([sys.executable, "-m", "tests.warm_cli", self.path], cwd=ROOT,
                                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self.log, text=True)
        line = self.zygote.stdout.readline()
        if line.strip() != "ready":
            raise RuntimeError(f"the CLI zygote did not start: {Path(self.log.name).read_text()[-2000:]}")

    def run(self, argv: list[str], env: dict, cwd: Path, timeout: float) -> subprocess.CompletedProcess:
        out_read, out_write = os.pipe()
        err_read, err_write = os.pipe()
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            client.connect(self.path)
            socket.send_fds(client, [json.dumps({"argv": argv, "env": env, "cwd": str(cwd)}).encode()],
                            [out_write, err_write])
        finally:
            os.close(out_write)
            os.close(err_write)
        answers = client.makefile("r")
        pid = json.loads(answers.readline())["pid"]
        deadline = time.monotonic() + timeout
        stdout, stderr = _read_both(out_read, err_read, deadline)
        if stdout is None:
            _kill(pid)
            client.close()
            raise subprocess.TimeoutExpired(["dbsweep", *argv], timeout)
        client.settimeout(max(1.0, deadline - time.monotonic()))
        status = json.loads(answers.readline())["status"]
        client.close()
        return subprocess.CompletedProcess(["dbsweep", *argv], status, stdout, stderr)

    def close(self) -> None:
        self.zygote.terminate()
        try:
            self.zygote.wait(30)
        except subprocess.TimeoutExpired:
            self.zygote.kill()
            self.zygote.wait()
        self.log.close()
        for name in ("zygote", "zygote.log"):
            Path(self.folder, name).unlink(missing_ok=True)
        os.rmdir(self.folder)


def _read_both(out_fd: int, err_fd: int, deadline: float) -> tuple[str | None, str | None]:
    """Both pipes to their end (the child and anything it started have closed them), or (None,
    None) at the deadline."""
    chunks = {out_fd: [], err_fd: []}
    open_fds = [out_fd, err_fd]
    try:
        while open_fds:
            left = deadline - time.monotonic()
            if left <= 0:
                return None, None
            ready, _, _ = select.select(open_fds, [], [], left)
            for fd in ready:
                data = os.read(fd, 1 << 16)
                if data:
                    chunks[fd].append(data)
                else:
                    open_fds.remove(fd)
    finally:
        os.close(out_fd)
        os.close(err_fd)
    return _text(chunks[out_fd]), _text(chunks[err_fd])


def _text(parts: list[bytes]) -> str:
    """As subprocess's text mode gives it: universal newlines."""
    return b"".join(parts).decode(errors="replace").replace("\r\n", "\n").replace("\r", "\n")


def _kill(pid: int) -> None:
    import signal

    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


_warm: WarmCli | None = None


def warm_cli() -> WarmCli:
    global _warm
    if _warm is None or _warm.zygote.poll() is not None:
        _warm = WarmCli()
    return _warm


def stop_warm_cli() -> None:
    global _warm
    if _warm is not None:
        _warm.close()
        _warm = None


if __name__ == "__main__":
    serve(sys.argv[1])
