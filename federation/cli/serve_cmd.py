"""`vmic serve`: serve a site home's lists, export, images and catalogue over HTTP(S)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from federation.cli.commands import HELP
from federation.cli.common import ExitCode
from federation.cli.sitehome import home_parent, site_home
from federation.listener import RunningServer
from federation.serve_endorser import create_endorser_app
from federation.server import run_until_signalled, serve_until_signalled, tls_context
from keys.errors import ConfigError
from site_agent.serve_settings import ServeSettings


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = commands.add_parser(
        "serve",
        parents=[home_parent()],
        help=HELP["serve"],
        description=(
            "Serve this site over HTTP, or HTTPS when [serve] tls_cert and tls_key are set: "
            "/lists/ID.atom (the original bytes of each list in force), /export.atom (the "
            "site's signed export), /images/sha512/HEX (image bytes, with Range; each file "
            "is re-hashed before it is first served and every [serve] rehash_hours, and a "
            "damaged one is quarantined instead), /images/sha512/HEX.blocks (the block index "
            "this site keeps of an available image, for peers' updates by blocks), / (the "
            "catalogue page), /image/UUID, "
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
    endorser = serve.add_argument_group(
        "serving an endorser's list instead of a site home",
        "With --manifest and --list, serve the signed list at /lists/ID.atom and the image "
        "files the manifest lists at /images/sha512/HEX (each re-hashed before it is first "
        "served; a file that no longer matches its endorsement is never served).",
    )
    endorser.add_argument("--manifest", type=Path, help="the list's manifest (vmic endorse)")
    endorser.add_argument("--list", type=Path, metavar="LIST.atom", help="the signed list file")
    endorser.add_argument(
        "--images", type=Path, help="folder holding the image files (default: the manifest's)"
    )
    endorser.add_argument("--tls-cert", type=Path, help="TLS certificate (PEM)")
    endorser.add_argument("--tls-key", type=Path, help="TLS key (PEM)")
    serve.set_defaults(func=_serve)


def _ready(running: RunningServer) -> None:
    print(f"vmic serve: listening on {running.url} (SIGINT or SIGTERM stops)", flush=True)
    if running.peers_only:
        print(
            'vmic serve: [serve] access = "peers": the export, lists and images only for '
            "clients presenting an allowed peer's certificate",
            flush=True,
        )


def _serve(args: argparse.Namespace) -> int:
    if args.access_log:
        logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(message)s")
    else:
        logging.basicConfig(
            stream=sys.stderr, level=logging.WARNING, format="vmic serve: %(message)s"
        )
    if args.manifest or args.list:
        asyncio.run(_serve_endorser(args))
    else:
        asyncio.run(
            serve_until_signalled(
                site_home(args), bind=args.bind, access_log=args.access_log, ready=_ready
            )
        )
    print("vmic serve: stopped", flush=True)
    return ExitCode.OK


async def _serve_endorser(args: argparse.Namespace) -> None:
    if not (args.manifest and args.list):
        raise ConfigError("serving an endorser's list needs --manifest and --list")
    for path in (args.manifest, args.list):
        if not path.is_file():
            raise ConfigError(f"{path} is not a file")
    images = args.images or args.manifest.resolve().parent
    settings = ServeSettings(tls_cert=args.tls_cert, tls_key=args.tls_key)
    if bool(args.tls_cert) != bool(args.tls_key):
        raise ConfigError("--tls-cert and --tls-key go together")
    app = create_endorser_app(
        args.manifest, args.list, images, rehash_interval=ServeSettings().rehash_interval
    )
    await run_until_signalled(
        app,
        bind=args.bind or ServeSettings().bind,
        ssl_context=tls_context(settings),
        max_connections=settings.max_connections,
        access_log=args.access_log,
        ready=_ready,
    )
