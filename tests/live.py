"""Real nodes for tests: `aidnode` CLI subprocesses serving on free 127.0.0.1 ports.

A `LiveNode` keeps the server's output in a log file and puts it into the failure message of
anything that goes wrong, so a failing multi-node test shows what each node said.
"""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

AIDNODE = str(Path(sys.executable).with_name("aidnode"))
START_TIMEOUT = 30.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_cli(*args: str, stdin: str | None = None, env: dict | None = None,
            check: bool = True) -> subprocess.CompletedProcess:
    """Run `aidnode ARGS`; with `check`, fail loudly with its stderr on a non-zero exit."""
    result = subprocess.run([AIDNODE, *args], input=stdin, capture_output=True, text=True,
                            env={**os.environ, **(env or {})}, timeout=60)  # fmt: skip
    if check and result.returncode != 0:
        raise AssertionError(f"aidnode {' '.join(args)} exited {result.returncode}:\n{result.stderr}")
    return result


class LiveNode:
    """One node: its data dir, port and serving process."""

    def __init__(self, root: Path, name: str, *, env: dict | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data = root / name.lower().replace(" ", "-")
        self.name = name
        self.env = {"AIDNODE_ALLOW_PRIVATE_ADDRESSES": "1", **(env or {})}
        self.log_path = root / f"{self.data.name}.log"
        self.process: subprocess.Popen | None = None

    def init(self) -> "LiveNode":
        run_cli("init", "--data", str(self.data), "--name", self.name, "--url", self.url,
                env=self.env)  # fmt: skip
        return self

    def cli(self, *args: str, stdin: str | None = None, check: bool = True):
        return run_cli(*args, "--data", str(self.data), stdin=stdin, env=self.env, check=check)

    def start(self) -> "LiveNode":
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [AIDNODE, "serve", "--data", str(self.data)], stdout=log, stderr=subprocess.STDOUT,
                env={**os.environ, **self.env}, start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"{self.name} exited at start:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"{self.name} did not answer /healthz in {START_TIMEOUT} s:\n{self.log()}")

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        os.killpg(self.process.pid, sig)
        try:
            return self.process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            return self.process.wait(5)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:] if self.log_path.exists() else ""

    def tracebacks(self) -> str:
        """Each traceback in the whole log, with the lines just before it; empty if none."""
        if not self.log_path.exists():
            return ""
        lines = self.log_path.read_text(errors="replace").splitlines()
        found = [i for i, line in enumerate(lines) if "Traceback" in line]
        return "\n...\n".join("\n".join(lines[max(0, i - 5):i + 40]) for i in found)
