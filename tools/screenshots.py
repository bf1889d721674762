"""Screenshots of what a user sees: a gate's expectation report (Great Expectations Data Docs) and
the gate check in the Dagster UI, taken with headless Chromium (Debian's `chromium` package).

    python tools/screenshots.py [--out DIR] [--port 3333]

Everything runs in a fresh DBSWEEP_HOME and DAGSTER_HOME under a temporary folder: the sample data
is loaded (nothing applied), `dbsweep plan` gates the telemetry policy (the CLI reports its plan
and gate to that Dagster instance), then `dbsweep ui` serves the UI on 127.0.0.1 while Chromium
takes its pictures, and stops with the embedded server when done."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--hide-scrollbars", "--window-size=1440,1000", "--virtual-time-budget=20000"]


def dbsweep(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dbsweep.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, check=True)


def shoot(url: str, out: Path, profile: Path) -> None:
    subprocess.run([*CHROMIUM, f"--user-data-dir={profile}", f"--screenshot={out}", url], check=True,
                   capture_output=True, timeout=120)
    print(f"{out}  <-  {url}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("screenshots"))
    parser.add_argument("--port", type=int, default=3333)
    parser.add_argument("--policy", default="telemetry", help="policy in policies/ to plan and show")
    parser.add_argument("--phase", default="events")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "DBSWEEP_HOME": f"{tmp}/home", "DAGSTER_HOME": f"{tmp}/dagster"}
        Path(env["DAGSTER_HOME"]).mkdir()
        dbsweep("demo", "--load-only", "--scale", "0.05", env=env)
        planned = dbsweep("plan", f"policies/{args.policy}.toml", "--phase", args.phase, env=env).stdout
        report = planned.split("gate report ")[1].split()[0]
        shoot(f"file://{report}", args.out / "gate_report.png", Path(tmp) / "chrome")
        ui = subprocess.Popen([sys.executable, "-m", "dbsweep.cli", "ui", "--port", str(args.port)], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            base = f"http://127.0.0.1:{args.port}"
            deadline = time.monotonic() + 180
            while True:
                try:
                    urllib.request.urlopen(f"{base}/server_info", timeout=5).read()
                    break
                except OSError:
                    if time.monotonic() > deadline or ui.poll() is not None:
                        raise SystemExit("the Dagster UI did not come up")
                    time.sleep(2)
            time.sleep(10)  # the code location loads after the server answers
            asset = f"{base}/assets/{args.policy}/{args.phase}/profile"
            shoot(f"{asset}?view=checks", args.out / "dagster_gate_check.png", Path(tmp) / "chrome")
            shoot(asset, args.out / "dagster_profile.png", Path(tmp) / "chrome")
        finally:
            os.killpg(ui.pid, signal.SIGINT)  # Ctrl-C, as a user would: Dagster, then the embedded server
            try:
                ui.wait(timeout=90)
            except subprocess.TimeoutExpired:
                os.killpg(ui.pid, signal.SIGKILL)


if __name__ == "__main__":
    main()
