"""What the flight recorder's lab tests share: a recorder subprocess, a real Prometheus."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from profiler.capture.processes import stop_pid

PROMETHEUS = Path("/usr/bin/prometheus")
ROOT = Path(__file__).parent.parent


@dataclass
class Recorder:
    """``profiler watch`` as a real subprocess, its stderr in a file."""

    process: subprocess.Popen[str]
    out: Path
    log: Path

    @classmethod
    def start(cls, out: Path, *args: str) -> Recorder:
        log = out.with_suffix(".log")
        with log.open("w") as stderr:
            process = subprocess.Popen(
                [sys.executable, "-m", "profiler", "watch", "-o", str(out), *args],
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                text=True,
                cwd=ROOT,
                env={**os.environ, "COLUMNS": "200"},
            )
        return cls(process, out, log)

    def terminate(self, timeout: float = 90.0) -> int:
        """SIGTERM, as systemd stops it; the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            stop_pid(self.process.pid)
            raise

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(10)

    def incidents(self) -> list[Path]:
        return sorted(p for p in self.out.glob("incident-*") if (p / "manifest.json").exists())

    def stderr(self) -> str:
        return self.log.read_text() if self.log.exists() else ""


def manifest(folder: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((folder / "manifest.json").read_text())
    return loaded


@dataclass
class Prometheus:
    """Debian's prometheus on loopback, scraping one target every second."""

    process: subprocess.Popen[bytes]
    port: int

    @classmethod
    def start(cls, directory: Path, port: int, target: str) -> Prometheus:
        directory.mkdir(parents=True, exist_ok=True)
        config = directory / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            "scrape_configs:\n  - job_name: profiler-watch\n"
            f"    static_configs:\n      - targets: ['{target}']\n"
        )
        log = (directory / "prometheus.log").open("wb")
        process = subprocess.Popen(
            [
                str(PROMETHEUS),
                f"--config.file={config}",
                f"--storage.tsdb.path={directory / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        return cls(process, port)

    def query(self, promql: str) -> list[dict[str, Any]]:
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode(
            {"query": promql}
        )
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                answer = json.loads(response.read())
        except OSError:
            return []  # not up yet
        result: list[dict[str, Any]] = answer.get("data", {}).get("result", [])
        return result

    def stop(self) -> None:
        stop_pid(self.process.pid)
        self.process.wait(10)


def prometheus_available() -> bool:
    return PROMETHEUS.exists()
