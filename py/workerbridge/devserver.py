"""The development server: static files with the headers cross-origin isolation needs.

COOP ``same-origin`` + COEP ``require-corp`` make the page ``crossOriginIsolated``, which
unlocks SharedArrayBuffer (progress and cancel without messages). Every response also
carries CORP ``same-origin`` so workers and wasm load under COEP. ETag/Last-Modified let
a reload revalidate the 10 MB wasm with a 304 instead of downloading it again.

It binds 127.0.0.1 unless told otherwise and never serves a file outside its folders:
``..`` segments (plain or percent-encoded), NUL bytes and symlinks that resolve outside
are refused.
"""

from __future__ import annotations

import contextlib
import email.utils
import hashlib
import os
import shutil
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

MIME_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".wasm": "application/wasm",
    ".whl": "application/zip",
    ".zip": "application/zip",
    ".py": "text/x-python; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".map": "application/json",
    ".toml": "text/plain; charset=utf-8",
}

Mount = tuple[str, Path]  # (URL prefix ending in "/", resolved folder)


def parse_mounts(root: str, extra: list[str]) -> list[Mount]:
    """``--dir`` and ``--mount PREFIX=DIR`` options -> mounts, longest prefix first."""
    mounts: list[Mount] = [("/", Path(root).resolve())]
    for spec in extra:
        prefix, sep, where = spec.partition("=")
        if not sep or not prefix.startswith("/") or not where:
            raise ValueError(f"--mount wants PREFIX=DIR with PREFIX starting with '/': {spec!r}")
        mounts.append((prefix.rstrip("/") + "/", Path(where).resolve()))
    for _, folder in mounts:
        if not folder.is_dir():
            raise ValueError(f"not a folder: {folder}")
    return sorted(mounts, key=lambda m: len(m[0]), reverse=True)


def resolve_path(mounts: list[Mount], url_path: str) -> Path | None:
    """The file a URL path names, or None if it is missing or outside every mount."""
    path = unquote(urlsplit(url_path).path, errors="strict")
    if "\x00" in path or "\\" in path:
        return None
    for prefix, root in mounts:
        if path != prefix.rstrip("/") and not path.startswith(prefix):
            continue
        parts = [p for p in path[len(prefix):].split("/") if p not in ("", ".")]
        if ".." in parts:
            return None
        target = root.joinpath(*parts)
        try:
            real = target.resolve(strict=True)
        except (OSError, RuntimeError):
            return None
        if real != root and root not in real.parents:
            return None  # a symlink leading out of the folder
        if real.is_dir():
            real = real / "index.html"
            if not real.is_file():
                return None
        return real if real.is_file() else None
    return None


class Handler(BaseHTTPRequestHandler):
    server: DevServer
    server_version = "workerbridge-devserver"
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        if os.environ.get("WORKERBRIDGE_SERVER_LOG"):
            super().log_message(format, *args)

    def _common_headers(self) -> None:
        if self.server.isolation:
            self.send_header("Cross-Origin-Opener-Policy", "same-origin")
            self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
            self.send_header("Cross-Origin-Resource-Policy", "same-origin")
        self.send_header("X-Content-Type-Options", "nosniff")

    def _error(self, status: HTTPStatus) -> None:
        body = f"{status.value} {status.phrase}\n".encode()
        self.send_response(status)
        self._common_headers()
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _serve(self) -> None:
        try:
            path = resolve_path(self.server.mounts, self.path)
        except UnicodeDecodeError:
            path = None
        if path is None:
            self._error(HTTPStatus.NOT_FOUND)
            return
        st = path.stat()
        etag = '"' + hashlib.sha1(f"{st.st_mtime_ns}-{st.st_size}".encode()).hexdigest()[:20] + '"'
        last_modified = email.utils.formatdate(st.st_mtime, usegmt=True)
        inm = self.headers.get("If-None-Match")
        ims = self.headers.get("If-Modified-Since")
        not_modified = (inm is not None and etag in [t.strip() for t in inm.split(",")]) or (
            inm is None and ims is not None and ims == last_modified)
        self.send_response(HTTPStatus.NOT_MODIFIED if not_modified else HTTPStatus.OK)
        self._common_headers()
        self.send_header("ETag", etag)
        self.send_header("Last-Modified", last_modified)
        self.send_header("Cache-Control", "no-cache")  # always revalidate, usually a 304
        if not_modified:
            self.end_headers()
            return
        ctype = MIME_TYPES.get(path.suffix.lower(), "application/octet-stream")
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(st.st_size))
        self.end_headers()
        if self.command == "HEAD":
            return
        with path.open("rb") as f, contextlib.suppress(BrokenPipeError, ConnectionResetError):
            shutil.copyfileobj(f, self.wfile, 1024 * 1024)

    def do_GET(self) -> None:
        self._serve()

    def do_HEAD(self) -> None:
        self._serve()


class DevServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, mounts: list[Mount], host: str, port: int, isolation: bool) -> None:
        self.mounts = mounts
        self.isolation = isolation
        super().__init__((host, port), Handler)


def make_server(mounts: list[Mount], host: str = "127.0.0.1", port: int = 8000,
                *, isolation: bool = True) -> DevServer:
    """A ready server; call ``serve_forever()`` (port 0 picks a free port)."""
    return DevServer(mounts, host, port, isolation)
