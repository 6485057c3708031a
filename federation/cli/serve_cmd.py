"""`vmic serve`: serve a site home's lists, export, images and catalogue over HTTP(S)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from federation.cli.common import ExitCode
from federation.cli.site_cmd import home_parent, site_home
from federation.listener import RunningServer
from federation.server import serve_until_signalled


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = commands.add_parser(
        "serve",
        parents=[home_parent()],
        help="serve lists, the export, images and the catalogue page (read-only)",
        description=(
            "Serve this site over HTTP, or HTTPS when [serve] tls_cert and tls_key are set: "
            "/lists/ID.atom (the original bytes of each list in force), /export.atom (the "
            "site's signed export), /images/sha512/HEX (image bytes, with Range; each file "
            "is re-hashed before it is first served and every [serve] rehash_hours, and a "
            "damaged one is quarantined instead), / (the catalogue page), /image/UUID, "
            "/healthz and /metrics. Read-only: changes are made with the other commands, "
            "and `vmic sync` may run meanwhile. Runs until SIGINT or SIGTERM."
        ),
    )
    serve.add_argument(
        "--bind",
        metavar="HOST:PORT",
        help="where to listen (default: [serve] bind in config.toml, 127.0.0.1:8080)",
    )
    serve.add_argument(
        "--access-log", action="store_true", help="log each request to stderr (off by default)"
    )
    serve.set_defaults(func=_serve)


def _ready(running: RunningServer) -> None:
    print(f"vmic serve: listening on {running.url} (SIGINT or SIGTERM stops)", flush=True)


def _serve(args: argparse.Namespace) -> int:
    if args.access_log:
        logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(message)s")
    else:
        logging.basicConfig(
            stream=sys.stderr, level=logging.WARNING, format="vmic serve: %(message)s"
        )
    asyncio.run(
        serve_until_signalled(
            site_home(args), bind=args.bind, access_log=args.access_log, ready=_ready
        )
    )
    print("vmic serve: stopped", flush=True)
    return ExitCode.OK
