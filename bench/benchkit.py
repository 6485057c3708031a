"""What the benchmarks share: a loopback file server, a throw-away endorser, and how
they read sizes and print figures.

The server runs in a spawned process so that its CPU is not the measured
process's; aiohttp's static route answers with ETag and Last-Modified, 304
on a matching conditional GET, and Range. It stops when the parent closes
its end of the pipe.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import multiprocessing
import os
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from pathlib import Path

from aiohttp import web
from cryptography import x509

from feeds.atom import render_list
from feeds.model import ImageEntry, ImageList, image_id, list_id, sha512_hex
from keys.certs import PrivateKey, load_private_key
from keys.dn import DistinguishedName
from keys.pki import create_ca, issue
from keys.xmlsig import SignerPin, sign_enveloped

MB = 1_000_000
MiB = 1024**2
GiB = 1024**3
STARTUP_TIMEOUT = 60.0
CHUNK = 4 * 1024 * 1024
CA_DN = "/DC=org/DC=example/O=vmic bench/CN=vmic bench CA"
ENDORSER_DN = "/DC=org/DC=example/O=vmic bench/OU=Endorsers/CN=Bench Endorser"


class ServerError(Exception):
    """The loopback server did not start."""


def _serve(directory: str, prefix: str, backlog: int, conn: Connection) -> None:
    asyncio.run(_serve_async(Path(directory), prefix, backlog, conn))


async def _serve_async(directory: Path, prefix: str, backlog: int, conn: Connection) -> None:
    app = web.Application()
    app.router.add_static(prefix, directory)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    site = web.SockSite(runner, sock, backlog=backlog)
    await site.start()
    conn.send(sock.getsockname()[1])
    await asyncio.get_running_loop().run_in_executor(None, _wait_for_close, conn)
    await runner.cleanup()


def _wait_for_close(conn: Connection) -> None:
    with contextlib.suppress(EOFError, OSError):
        conn.recv()


@contextlib.contextmanager
def serving(directory: Path, *, prefix: str, backlog: int = 128) -> Iterator[str]:
    """Serve ``directory`` under ``prefix`` on 127.0.0.1; yields the base URL."""
    ctx = multiprocessing.get_context("spawn")
    mine, theirs = ctx.Pipe()
    process = ctx.Process(
        target=_serve, args=(str(directory), prefix, backlog, theirs), daemon=True
    )
    process.start()
    theirs.close()
    try:
        if not mine.poll(STARTUP_TIMEOUT):
            raise ServerError("the loopback server did not start")
        port = mine.recv()
        yield f"http://127.0.0.1:{port}{prefix}"
    finally:
        mine.close()  # the server sees EOF and stops
        process.join(10)
        if process.is_alive():
            process.terminate()
            process.join()


@dataclass(frozen=True, slots=True, kw_only=True)
class Endorser:
    """A dev CA folder (usable as a trust directory) and an endorser's key and certificate."""

    ca_dir: Path
    key: PrivateKey
    cert: x509.Certificate

    @property
    def pin(self) -> SignerPin:
        return SignerPin(
            subject=DistinguishedName.from_x509(self.cert.subject),
            issuer=DistinguishedName.from_x509(self.cert.issuer),
        )


def make_endorser(workdir: Path, now: datetime) -> Endorser:
    """A throw-away dev CA and endorser (EC keys, for speed) under ``workdir``."""
    ca_dir = workdir / "ca"
    ca = create_ca(DistinguishedName.parse_slash(CA_DN), ca_dir, now=now, key_type="ec")
    endorser_dir = workdir / "endorser"
    cert = issue(
        ca,
        DistinguishedName.parse_slash(ENDORSER_DN),
        endorser_dir,
        now=now,
        email="bench@example.org",
        key_type="ec",
    )
    return Endorser(ca_dir=ca_dir, key=load_private_key(endorser_dir / "key.pem"), cert=cert)


IMAGE_NAME = "image.raw"
LIST_NAME = "list.atom"


def write_one_image_list(
    served: Path, base: str, endorser: Endorser, *, what: str, sha512: str, size: int
) -> None:
    """The endorser's signed list (``served``/LIST_NAME), naming one image at
    ``base``/IMAGE_NAME; ``what`` names the benchmark in the titles."""
    now = datetime.now(UTC)
    entry = ImageEntry(
        id=image_id(str(uuid.uuid4())),
        title=f"vmic {what} benchmark image",
        summary="Random bytes served on the loopback interface",
        url=f"{base}/{IMAGE_NAME}",
        size=size,
        sha512=sha512_hex(sha512),
        format="raw",
        updated=now - timedelta(hours=1),
        endorsed=now - timedelta(hours=1),
    )
    image_list = ImageList(
        id=list_id(str(uuid.uuid4())),
        title=f"vmic {what} benchmark list",
        self_url=f"{base}/{LIST_NAME}",
        updated=now - timedelta(minutes=10),
        expires=now + timedelta(days=28),
        version=1,
        endorser_dn=DistinguishedName.from_x509(endorser.cert.subject),
        issuer_dn=DistinguishedName.from_x509(endorser.cert.issuer),
        author_name="Bench Endorser",
        entries=(entry,),
    )
    signed = sign_enveloped(render_list(image_list), key=endorser.key, cert=endorser.cert)
    (served / LIST_NAME).write_bytes(signed)


def make_image(path: Path, size: int) -> str:
    """Write ``size`` random bytes to ``path``; return their SHA-512 (hex)."""
    digest = hashlib.sha512()
    with path.open("wb") as handle:
        left = size
        while left:
            chunk = os.urandom(min(CHUNK, left))
            handle.write(chunk)
            digest.update(chunk)
            left -= len(chunk)
    return digest.hexdigest()


# -- reading sizes, printing figures ------------------------------------------------------


def parse_size(text: str) -> int:
    """``256k``, ``64m``, ``1g`` or a number of bytes (for --size options)."""
    units = {"k": 1024, "m": MiB, "g": GiB}
    suffix = text[-1:].lower()
    try:
        value = int(text[:-1]) * units[suffix] if suffix in units else int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size (e.g. 256k, 64m, 1g)") from exc
    if value < 1:
        raise argparse.ArgumentTypeError("the size must be at least 1 byte")
    return value


def samples(values: list[float]) -> str:
    return ", ".join(f"{v:.3f}" for v in values)


def rate(size: int, seconds: float) -> str:
    return f"{size / seconds / MB:,.0f} MB/s" if seconds > 0 else "n/a"


def verdict(met: bool) -> str:
    return "target met" if met else "target missed"
