"""The command line.

    python -m workerbridge serve --dir DIR [--port N] [--host H]
        the COOP/COEP dev server
    python -m workerbridge bundle OUT [--requirements FILE] [--package SPEC ...]
        write a bundle (Pyodide, PyScript, workerbridge and the packages' wheels) to OUT
"""

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
    bundle = sub.add_parser("bundle", help="write a bundle, with packages for the workers")
    bundle.add_argument("out", help="the folder to write (replaced whole)")
    bundle.add_argument("--requirements", "-r", action="append", default=[], metavar="FILE",
                        help="a file of requirements, one a line (repeatable)")
    bundle.add_argument("--package", "-p", action="append", default=[], metavar="SPEC",
                        help="a requirement, e.g. attrs or 'msgspec==0.23.0' (repeatable)")
    args = parser.parse_args(argv)
    if args.command == "bundle":
        return write_bundle_command(args.out, args.requirements, args.package)

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


def write_bundle_command(out: str, requirement_files: list[str], specs: list[str]) -> int:
    from pathlib import Path

    from workerbridge.bundle.wheels import BundleError
    from workerbridge.bundle.writer import read_requirements, write_bundle

    try:
        wanted = [r for f in requirement_files for r in read_requirements(Path(f))] + specs
        done = write_bundle(Path(out), wanted)
    except OSError as exc:
        print(f"workerbridge bundle: {exc}", file=sys.stderr)
        return 1
    except BundleError as exc:
        print(f"workerbridge bundle: {exc}", file=sys.stderr)
        return 2
    names = ", ".join(f"{w.name} {w.version}" for w in done.wheels)
    print(f"workerbridge: bundle written to {done.out} (packages: {names})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
