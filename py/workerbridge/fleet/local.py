"""A whole fleet on this machine: RabbitMQ, the gateway and N workers, as child processes.

``python3 build.py fleet`` runs one until Ctrl-C; the tests and the benchmark start one per
session. Every process is started here and stopped by its process id (its process group),
the broker's ``epmd`` too when this started it. RabbitMQ comes from the system's packages
(Debian's ``rabbitmq-server``), installed with apt when running as root and missing.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

RABBITMQ = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None,
              what: str = "a server") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} before it listened")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{what} did not listen on port {port} within {timeout:g} s")


def ensure_rabbitmq() -> Path:
    """The RabbitMQ server script, installed from the system's packages if missing."""
    if RABBITMQ.exists():
        return RABBITMQ
    apt = shutil.which("apt-get")
    if apt is None or os.geteuid() != 0:
        raise SystemExit("the fleet needs RabbitMQ: install it with "
                         "`sudo apt-get install rabbitmq-server` (Debian/Ubuntu), or point "
                         "WORKERBRIDGE_BROKER at a running broker")
    print("[fleet] installing rabbitmq-server with apt", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = [apt, "install", "-y", "--no-install-recommends", "rabbitmq-server"]
    if subprocess.run(cmd, env=env, check=False).returncode != 0:
        subprocess.run([apt, "update"], env=env, check=True)
        subprocess.run(cmd, env=env, check=True)
    if not RABBITMQ.exists():
        raise SystemExit(f"rabbitmq-server installed, but {RABBITMQ} is missing")
    return RABBITMQ


def _pids_of(name: str) -> set[int]:
    out = subprocess.run(["pgrep", "-x", name], capture_output=True, text=True, check=False)
    return {int(p) for p in out.stdout.split()}


def _stop(proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


class LocalFleet:
    """Broker, gateway and workers under ``base`` (logs, the broker's data, the job table)."""

    def __init__(self, base: Path, *, workers: int = 2, modules: Sequence[str] = (),
                 token: str | None = None, gateway_port: int | None = None,
                 broker: str | None = None, max_frame: int | None = None,
                 quiet: bool = True) -> None:
        self.base = Path(base)
        self.n_workers = workers
        self.modules = list(modules)
        self.token = token or secrets.token_urlsafe(24)
        self.gateway_port = gateway_port or free_port()
        self.amqp_port = free_port()
        self.external_broker = broker
        self.max_frame = max_frame
        self.quiet = quiet
        self.broker_proc: subprocess.Popen[bytes] | None = None
        self.gateway_proc: subprocess.Popen[bytes] | None = None
        self.workers: list[subprocess.Popen[bytes]] = []
        self._epmd_before: set[int] = set()
        self._worker_count = 0

    @property
    def broker_url(self) -> str:
        return self.external_broker or f"amqp://guest:guest@127.0.0.1:{self.amqp_port}/"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.gateway_port}/v1/ws"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.gateway_port}"

    def _env(self) -> dict[str, str]:
        return {**os.environ, "WORKERBRIDGE_BROKER": self.broker_url,
                "WORKERBRIDGE_FLEET_TOKEN": self.token, "PYTHONUNBUFFERED": "1"}

    def _spawn(self, args: list[str], log: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
        out = open(self.base / log, "ab")  # noqa: SIM115 - the child keeps it
        try:
            return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env,
                                    cwd=self.base, start_new_session=True)
        finally:
            out.close()

    # --- the parts --------------------------------------------------------------------------

    def start_broker(self) -> None:
        if self.external_broker:
            return
        script = ensure_rabbitmq()
        root = self.base / "rabbitmq"
        root.mkdir(parents=True, exist_ok=True)
        (root / "enabled_plugins").write_text("[].\n")
        self._epmd_before = _pids_of("epmd")
        env = {**os.environ, "HOME": str(root),
               "RABBITMQ_NODENAME": f"wb{self.amqp_port}@localhost",
               "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
               "RABBITMQ_NODE_PORT": str(self.amqp_port),
               "RABBITMQ_DIST_PORT": str(free_port()),
               "RABBITMQ_MNESIA_BASE": str(root / "mnesia"),
               "RABBITMQ_LOG_BASE": str(root / "log"),
               "RABBITMQ_ENABLED_PLUGINS_FILE": str(root / "enabled_plugins"),
               "RABBITMQ_PID_FILE": str(root / "pid"),
               "ERL_EPMD_ADDRESS": "127.0.0.1",
               "RABBITMQ_LOGS": "-"}
        self.broker_proc = self._spawn([str(script)], "rabbitmq.log", env)
        wait_port(self.amqp_port, 60, self.broker_proc, "RabbitMQ")

    def start_gateway(self) -> None:
        args = [sys.executable, "-m", "workerbridge.fleet", "gateway",
                "--port", str(self.gateway_port), "--db", str(self.base / "jobs.db")]
        if self.max_frame is not None:
            args += ["--max-frame", str(self.max_frame)]
        for module in self.modules:
            args += ["--module", module]
        self.gateway_proc = self._spawn(args, "gateway.log", self._env())
        wait_port(self.gateway_port, 30, self.gateway_proc, "the gateway")

    def start_worker(self) -> subprocess.Popen[bytes]:
        self._worker_count += 1
        args = [sys.executable, "-m", "workerbridge.fleet", "worker",
                "--name", f"worker-{self._worker_count}"]
        for module in self.modules:
            args += ["--module", module]
        proc = self._spawn(args, f"worker-{self._worker_count}.log", self._env())
        self.workers.append(proc)
        return proc

    def kill_worker(self, pid: int) -> None:
        """SIGKILL one worker (no goodbye: its connection to the broker just drops)."""
        for proc in self.workers:
            if proc.pid == pid:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
                self.workers.remove(proc)
                return
        raise KeyError(pid)

    def health(self) -> dict[str, Any]:
        request = urllib.request.Request(f"{self.http_url}/v1/health",
                                         headers={"Authorization": f"Bearer {self.token}"})
        try:
            with urllib.request.urlopen(request, timeout=5) as answer:
                return dict(json.loads(answer.read()))
        except urllib.error.HTTPError as exc:
            return dict(json.loads(exc.read()))

    def wait_workers(self, n: int | None = None, timeout: float = 60) -> list[dict[str, Any]]:
        """Wait until the gateway has heard from ``n`` live workers (default: all)."""
        want = self.n_workers if n is None else n
        pids = {p.pid for p in self.workers}
        deadline = time.monotonic() + timeout
        while True:
            workers = [w for w in self.health().get("workers", []) if w.get("pid") in pids]
            if len(workers) >= want:
                return workers
            if time.monotonic() > deadline:
                raise RuntimeError(f"{len(workers)} of {want} fleet workers reported in "
                                   f"{timeout:g} s (logs in {self.base})")
            time.sleep(0.1)

    def start(self) -> LocalFleet:
        self.base.mkdir(parents=True, exist_ok=True)
        try:
            self.start_broker()
            self.start_gateway()
            for _ in range(self.n_workers):
                self.start_worker()
            self.wait_workers()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for proc in self.workers:
            _stop(proc)
        self.workers.clear()
        if self.gateway_proc is not None:
            _stop(self.gateway_proc)
        if self.broker_proc is not None:
            _stop(self.broker_proc, grace=15)
            for pid in _pids_of("epmd") - self._epmd_before:  # the broker's, started by it
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)

    def __enter__(self) -> LocalFleet:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str]) -> None:
    """``python3 build.py fleet``: run a local fleet until Ctrl-C."""
    import argparse
    import tempfile

    parser = argparse.ArgumentParser(prog="python3 build.py fleet")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--module", action="append", default=[])
    parser.add_argument("--broker", default=None, help="use this AMQP URL instead of a "
                        "local RabbitMQ")
    args = parser.parse_args(argv)
    token = os.environ.get("WORKERBRIDGE_FLEET_TOKEN") or secrets.token_urlsafe(24)
    base = Path(tempfile.mkdtemp(prefix="workerbridge-fleet-"))
    fleet = LocalFleet(base, workers=args.workers, modules=args.module, token=token,
                       gateway_port=args.port, broker=args.broker)
    fleet.start()
    print(f"[fleet] gateway {fleet.ws_url} (health: {fleet.http_url}/v1/health), "
          f"{args.workers} workers, broker {fleet.broker_url}", flush=True)
    print(f"[fleet] token: {token}", flush=True)
    print(f"[fleet] logs in {base}; Ctrl-C stops everything", flush=True)
    try:
        while True:
            time.sleep(1)
            for proc in list(fleet.workers):
                if proc.poll() is not None:
                    print(f"[fleet] worker {proc.pid} exited ({proc.returncode}); starting "
                          "another", flush=True)
                    fleet.workers.remove(proc)
                    fleet.start_worker()
    except KeyboardInterrupt:
        print("\n[fleet] stopping", flush=True)
    finally:
        fleet.stop()
