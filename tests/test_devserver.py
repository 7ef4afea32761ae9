"""The dev server over real HTTP on 127.0.0.1: headers, MIME types, validators, traversal."""

from __future__ import annotations

import http.client
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from workerbridge.__main__ import main as cli_main
from workerbridge.devserver import make_server, parse_mounts


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int, Path]]:
    base = tmp_path_factory.mktemp("site")
    root = base / "root"
    (root / "sub").mkdir(parents=True)
    (root / "index.html").write_text("<p>home</p>")
    (root / "sub" / "index.html").write_text("<p>sub</p>")
    for name in ("a.wasm", "a.mjs", "a.js", "a.json", "a.whl", "a.zip", "a.bin"):
        (root / name).write_bytes(b"\0asm" + name.encode())
    (base / "secret.txt").write_text("outside")
    os.symlink(base / "secret.txt", root / "link-out.txt")
    os.symlink(root / "a.js", root / "link-in.js")
    mounted = base / "mounted"
    mounted.mkdir()
    (mounted / "m.txt").write_text("mounted")
    srv = make_server(parse_mounts(str(root), [f"/dist={mounted}"]), "127.0.0.1", 0)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield "127.0.0.1", srv.server_address[1], base
    srv.shutdown()


def fetch(site: tuple[str, int, Path], path: str, method: str = "GET",
          headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection(site[0], site[1], timeout=10)
    conn.putrequest(method, path, skip_accept_encoding=True)  # send the path byte for byte
    for k, v in (headers or {}).items():
        conn.putheader(k, v)
    conn.endheaders()
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body


def test_isolation_headers_on_every_response(site):
    for path in ("/", "/a.js", "/missing"):
        _, headers, _ = fetch(site, path)
        assert headers["cross-origin-opener-policy"] == "same-origin"
        assert headers["cross-origin-embedder-policy"] == "require-corp"
        assert headers["cross-origin-resource-policy"] == "same-origin"


@pytest.mark.parametrize(("name", "mime"), [
    ("a.wasm", "application/wasm"), ("a.mjs", "text/javascript"), ("a.js", "text/javascript"),
    ("a.json", "application/json"), ("a.whl", "application/zip"), ("a.zip", "application/zip"),
    ("a.bin", "application/octet-stream")])
def test_mime_types(site, name, mime):
    status, headers, body = fetch(site, "/" + name)
    assert status == 200
    assert headers["content-type"].split(";")[0] == mime
    assert body == b"\0asm" + name.encode()


def test_index_head_404_and_mounts(site):
    assert fetch(site, "/")[2] == b"<p>home</p>"
    assert fetch(site, "/sub/")[2] == b"<p>sub</p>"
    status, headers, body = fetch(site, "/a.wasm", "HEAD")
    assert status == 200 and body == b"" and headers["content-length"] == str(len(b"\0asma.wasm"))
    assert fetch(site, "/nope.js")[0] == 404
    assert fetch(site, "/dist/m.txt")[2] == b"mounted"
    assert fetch(site, "/link-in.js")[0] == 200  # a symlink that stays inside is fine


def test_validators_give_304(site):
    _, headers, _ = fetch(site, "/a.wasm")
    status, _, body = fetch(site, "/a.wasm", headers={"If-None-Match": headers["etag"]})
    assert status == 304 and body == b""
    status, _, _ = fetch(site, "/a.wasm", headers={"If-Modified-Since": headers["last-modified"]})
    assert status == 304
    assert fetch(site, "/a.wasm", headers={"If-None-Match": '"other"'})[0] == 200


@pytest.mark.parametrize("path", [
    "/../secret.txt", "/sub/../../secret.txt", "/%2e%2e/secret.txt", "/%2E%2E%2Fsecret.txt",
    "/sub/%2e%2e/%2e%2e/secret.txt", "/..%2fsecret.txt", "//etc/passwd", "/%2fetc%2fpasswd",
    "/etc/passwd", "/link-out.txt", "/a.js%00.txt", "/..\\secret.txt", "/%5c..%5csecret.txt",
    "/dist/../../secret.txt", "/dist/%2e%2e/%2e%2e/secret.txt", "/%ff%fe"])
def test_never_serves_outside_the_root(site, path):
    status, _, body = fetch(site, path)
    assert status == 404
    assert b"outside" not in body and b"root:" not in body


def test_cli_rejects_bad_mounts(capsys):
    with pytest.raises(SystemExit):
        cli_main(["serve", "--dir", ".", "--mount", "nodir"])
    with pytest.raises(SystemExit):
        cli_main(["serve", "--dir", "/no/such/folder"])


def test_cli_binds_loopback_by_default(tmp_path):
    (tmp_path / "index.html").write_text("hi")
    proc = subprocess.Popen([sys.executable, "-m", "workerbridge", "serve", "--dir",
                             str(tmp_path), "--port", "0"], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("workerbridge: serving on http://127.0.0.1:")
        port = int(line.split(":")[3].split("/")[0])
        assert fetch(("127.0.0.1", port, tmp_path), "/")[2] == b"hi"
    finally:
        proc.terminate()
        proc.wait(10)
