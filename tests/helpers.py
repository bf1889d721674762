"""Drive the engine the way the CLI does: plan, GE gate, apply; scrape the metrics exporter;
receive what the alert sensors post."""

import json
import socket
import threading
import urllib.request
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, HTTPServer

from prometheus_client.parser import text_string_to_metric_families

from dbsweep import service
from dbsweep.policy import load_policy
from dbsweep.target import connect


def plan_and_gate(policy_path, phase="purge", env=None):
    from expectations.runner import gate

    policy = load_policy(policy_path)
    target = connect(policy, env)
    plan = service.make_plan(policy, phase, target)
    service.record_gate(target, plan, gate(plan))
    return policy, target, plan


def purge(policy_path, phase="purge", **overrides):
    policy, target, plan = plan_and_gate(policy_path, phase)
    assert plan.gate.passed, plan.gate.summary
    report = service.apply(policy, target, plan, dry_run=False, **overrides)
    return plan, report, target


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def scrape(url: str) -> dict[tuple[str, tuple], float]:
    """Every sample the exporter serves: (name, sorted labels) -> value."""
    text = urllib.request.urlopen(url, timeout=30).read().decode()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


@contextmanager
def webhook():
    """A webhook on loopback: yields (its URL, the JSON messages posted to it so far)."""
    received: list[dict] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/hook", received
    finally:
        server.shutdown()
        server.server_close()


def wait_for_a_batch(engine, seconds: float = 300) -> None:
    """Until a run has committed its first batch in this database's ledger."""
    import time

    import sqlalchemy as sa

    deadline = time.monotonic() + seconds
    while True:
        with engine.connect() as conn:
            if sa.inspect(conn).has_table("batches", schema="dbsweep") and \
                    conn.execute(sa.text("SELECT count(*) FROM dbsweep.batches")).scalar():
                return
        assert time.monotonic() < deadline, "no batch was committed"
        time.sleep(0.05)



def png_colours(path) -> dict[tuple[int, int, int], int]:
    """How many pixels of each colour an 8-bit RGB or RGBA PNG holds (Chromium's screenshots)."""
    import struct
    import zlib
    from collections import Counter
    from pathlib import Path

    data = Path(path).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, width = 8, b"", 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour = struct.unpack(">IIBB", body[:10])
            assert depth == 8 and colour in (2, 6), (depth, colour)
            channels = 3 if colour == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw, stride, counts, previous = zlib.decompress(idat), width * channels, Counter(), bytearray(width * channels)
    for row in range(height):
        start = row * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1:start + 1 + stride])
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up, corner = previous[i], previous[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + left) & 255
            elif kind == 2:
                line[i] = (line[i] + up) & 255
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 255
            elif kind == 4:
                p = left + up - corner
                guess = min((abs(p - left), 0, left), (abs(p - up), 1, up), (abs(p - corner), 2, corner))[2]
                line[i] = (line[i] + guess) & 255
        counts.update(zip(line[0::channels], line[1::channels], line[2::channels]))
        previous = line
    return dict(counts)
