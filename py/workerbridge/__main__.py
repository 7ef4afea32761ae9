"""``python -m workerbridge serve --dir DIR [--port N] [--host H]``: the COOP/COEP dev server."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="workerbridge")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve a folder with cross-origin isolation headers")
    serve.add_argument("--dir", default=".", help="folder served at / (default: .)")
    serve.add_argument("--mount", action="append", default=[], metavar="PREFIX=DIR",
                       help="also serve DIR under URL PREFIX (repeatable), e.g. /dist=dist")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to bind (default 127.0.0.1: this machine only)")
    serve.add_argument("--no-isolation", action="store_true",
                       help="omit COOP/COEP/CORP (to try the non-isolated fallback)")
    args = parser.parse_args(argv)

    from workerbridge.devserver import make_server, parse_mounts

    try:
        mounts = parse_mounts(args.dir, args.mount)
    except ValueError as exc:
        parser.error(str(exc))
    server = make_server(mounts, args.host, args.port, isolation=not args.no_isolation)
    host, port = server.server_address[:2]
    print(f"workerbridge: serving on http://{host!s}:{port}/ (Ctrl-C to stop)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
