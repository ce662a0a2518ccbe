"""Starts the real switchboard binary on free loopback ports for the client tests.

The binary is ``$SWITCHBOARD_BIN`` when set, else ``$CARGO_TARGET_DIR/debug/switchboard``
(``<repo>/target`` when ``CARGO_TARGET_DIR`` is unset). ``clients/run-tests.sh`` builds it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

REPO = Path(__file__).resolve().parents[3]
SYSTEMS = ("laptimes", "afc", "race", "collab", "dcdock")

JWT_SECRET = "test-jwt-secret"
KEYS = {
    "afc": "afc-test-key",
    "race": "race-test-key",
    "collab": "collab-test-key",
    "dcdock": "dcdock-test-key",
}


def server_binary() -> Path:
    env = os.environ.get("SWITCHBOARD_BIN")
    if env:
        return Path(env)
    target = Path(os.environ.get("CARGO_TARGET_DIR") or REPO / "target")
    if not target.is_absolute():
        target = REPO / target
    return target / "debug" / "switchboard"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One switchboard process serving some systems on fixed ports; can stop and start again."""

    def __init__(self, systems=SYSTEMS, extra_args=()):
        self.systems = tuple(systems)
        self.ports = {s: free_port() for s in self.systems}
        self.extra_args = list(extra_args)
        self.proc: subprocess.Popen | None = None
        self.log = tempfile.NamedTemporaryFile(
            prefix="switchboard-", suffix=".log", delete=False
        )

    def args(self) -> list[str]:
        binary = server_binary()
        if not binary.exists():
            pytest.fail(f"server binary {binary} is missing: run clients/run-tests.sh")
        a = [str(binary), "--bind", "127.0.0.1", "--systems", ",".join(self.systems)]
        a += ["--log-level", "warn"]
        # Stop at once on SIGTERM: no ready delay, every client closed together (with 1012).
        a += ["--drain-ready-delay-secs", "0", "--drain-window-secs", "0"]
        for s, p in self.ports.items():
            a += [f"--{s}-port", str(p)]
            if s in KEYS:
                a += [f"--{s}-api-key", KEYS[s]]
        if "dcdock" in self.systems:
            a += ["--dcdock-jwt-secret", JWT_SECRET]
        return a + self.extra_args

    def start(self, timeout: float = 15.0) -> "Server":
        env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
        for k in ("WS_PORT", "PORT", "DCDOCK_JWT_SECRET", "ALLOWED_ORIGINS"):
            env.pop(k, None)
        self.proc = subprocess.Popen(
            self.args(), stdout=self.log, stderr=subprocess.STDOUT, env=env
        )
        deadline = time.monotonic() + timeout
        pending = set(self.ports.values())
        while pending:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self.output()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"server did not listen on {pending}: {self.output()}")
            for port in list(pending):
                with socket.socket() as s:
                    s.settimeout(0.2)
                    if s.connect_ex(("127.0.0.1", port)) == 0:
                        pending.discard(port)
            time.sleep(0.02)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGCONT)  # in case a test froze it
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def freeze(self) -> None:
        """Stop the process (SIGSTOP): its sockets stay open but nothing answers."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        """Let a frozen process run again (SIGCONT)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def output(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text(errors="replace")[-4000:]

    def ws(self, system: str, path: str = "") -> str:
        return f"ws://127.0.0.1:{self.ports[system]}{path}"

    def http(self, system: str) -> str:
        return f"http://127.0.0.1:{self.ports[system]}"


@pytest.fixture(scope="session")
def server():
    """Every system on its own free port, with publish keys and the DCDock JWT secret set."""
    srv = Server().start()
    yield srv
    srv.stop()
    if srv.proc is not None and srv.proc.returncode not in (0, -signal.SIGTERM):
        print(srv.output(), file=sys.stderr)


@pytest.fixture
def fresh_server():
    """A server of its own, for tests that stop and restart it."""
    srv = Server()
    yield srv
    srv.stop()
