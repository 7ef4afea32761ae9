"""A real server for the outbox tests and benchmark: WebSocket (the ``websockets``
package) and HTTP POST, acknowledging events by id, deduplicating them, and misbehaving
on request.

Run as ``python outbox_server.py WS_PORT HTTP_PORT LOG``. Each event seen for the first
time is an *effect*: it is appended to LOG (JSON lines, flushed), which a restarted server
reads back, so deduplication holds across kills. ``GET /state`` on the HTTP port returns
``{"effects": [[id, key], ...], "duplicates": n, "batches": n, "connections": n,
"hellos": [...]}``; ``POST /mode`` sets misbehaviour: ``{"drop_every": n}`` closes the
connection on every n-th batch after applying it and before acknowledging it (a lost
acknowledgement); ``{"fail_every": n}`` answers every n-th HTTP batch with 503, applying
nothing; ``{"hold_after": n}`` leaves every WebSocket batch unapplied and unanswered once
n effects are in, until the mode changes (so a test can act while events are surely
still pending). A fourth argument sets the mode at start, as JSON. ``POST /events`` is the HTTP outbox endpoint (CORS allowed for the test pages).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from threading import Lock, Thread
from typing import Any

from websockets.asyncio.server import serve
from websockets.protocol import State as State_


class State:
    def __init__(self, log: Path) -> None:
        self.log = log
        self.lock = Lock()
        self.seen: set[str] = set()
        self.effects: list[list[Any]] = []
        if log.exists():
            text = log.read_text()
            if text and not text.endswith("\n"):  # end a cut line: appends start afresh
                with log.open("a") as out:
                    out.write("\n")
            for line in text.splitlines():
                try:
                    ident, key = json.loads(line)
                except ValueError:
                    # A line cut short by a kill: that effect never committed, and was
                    # never acknowledged, so the outbox sends it again.
                    continue
                self.seen.add(ident)
                self.effects.append([ident, key])
        self.duplicates = 0
        self.batches = 0
        self.connections = 0
        self.posts = 0
        self.hellos: list[Any] = []
        self.mode: dict[str, int] = {}

    def apply(self, events: list[dict[str, Any]]) -> list[str]:
        """Apply a batch (each id once); the ids to acknowledge."""
        with self.lock, self.log.open("a") as out:
            self.batches += 1
            for event in events:
                ident = event["id"]
                if ident in self.seen:
                    self.duplicates += 1
                    continue
                self.seen.add(ident)
                self.effects.append([ident, event.get("key")])
                out.write(json.dumps([ident, event.get("key")]) + "\n")
            return [e["id"] for e in events]

    def every(self, name: str) -> bool:
        n = self.mode.get(name, 0)
        return bool(n) and self.batches % n == 0

    def held(self) -> bool:
        n = self.mode.get("hold_after", 0)
        return bool(n) and len(self.effects) >= n

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {"effects": list(self.effects), "duplicates": self.duplicates,
                    "batches": self.batches, "connections": self.connections,
                    "hellos": list(self.hellos)}


def http_handler(state: State) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _send(self, code: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("content-type", "application/json")
            self.send_header("access-control-allow-origin", "*")
            self.send_header("access-control-allow-headers", "content-type, authorization")
            self.send_header("cross-origin-resource-policy", "cross-origin")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_OPTIONS(self) -> None:
            self._send(204, None)

        def do_GET(self) -> None:
            self._send(200, state.snapshot())

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["content-length"])) or b"{}")
            if self.path == "/mode":
                state.mode = {k: int(v) for k, v in body.items()}
                self._send(200, state.mode)
                return
            with state.lock:
                state.posts += 1
                n = state.mode.get("fail_every", 0)
                failing = bool(n) and state.posts % n == 0
            if failing:
                self._send(503, {"error": "unavailable"})
                return
            if self.headers.get("authorization"):
                with state.lock:
                    state.hellos.append({"authorization": self.headers["authorization"]})
            self._send(200, {"ack": state.apply(body["events"])})

    return Handler


async def main(ws_port: int, http_port: int, log: Path, mode: dict[str, int]) -> None:
    state = State(log)
    state.mode = mode
    http = ThreadingHTTPServer(("127.0.0.1", http_port), http_handler(state))
    Thread(target=http.serve_forever, daemon=True).start()

    async def session(ws: Any) -> None:
        state.connections += 1
        async for raw in ws:
            message = json.loads(raw)
            if message.get("type") == "hello":
                state.hellos.append(message.get("headers"))
                continue
            while state.held():
                await asyncio.sleep(0.02)
            if ws.state is not State_.OPEN:
                return  # the sender left while held: this batch was never applied
            acks = state.apply(message["events"])
            if state.every("drop_every"):
                await ws.close()  # applied, never acknowledged
                return
            await ws.send(json.dumps({"ack": acks}))

    async with serve(session, "127.0.0.1", ws_port, max_size=None):
        print("ready", flush=True)
        await asyncio.Future()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """The server as a child process, started and stopped (killed) by its pid; its
    ports and log stay the same across restarts."""

    def __init__(self, log: Path) -> None:
        self.log = log
        self.ws_port = free_port()
        self.http_port = free_port()
        self.proc: subprocess.Popen[str] | None = None

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.ws_port}/"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/events"

    def start(self, **mode: int) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, str(self.ws_port), str(self.http_port), str(self.log),
             json.dumps(mode)],
            stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # "ready" once both ports listen
        assert line.strip() == "ready", line

    def kill(self) -> None:
        if self.proc is not None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            self.proc = None

    def _call(self, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        url = f"http://127.0.0.1:{self.http_port}{path}"
        with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=10) as r:
            return json.loads(r.read())

    def state(self) -> dict[str, Any]:
        return dict(self._call("/state"))

    def set_mode(self, **mode: int) -> None:
        self._call("/mode", mode)

    def wait_for(self, effects: int, timeout: float = 60) -> dict[str, Any]:
        """The state once ``effects`` effects are in (or at the timeout)."""
        deadline = time.monotonic() + timeout
        while True:
            state = self.state()
            if len(state["effects"]) >= effects or time.monotonic() > deadline:
                return state
            time.sleep(0.05)


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3]),
                     json.loads(sys.argv[4]) if len(sys.argv) > 4 else {}))
