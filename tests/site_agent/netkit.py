"""Helpers for the network tests: fast limits, synchronous calls into the Fetcher, test images,
a self-signed certificate, and a probe for user and mount namespaces (``unshare -rm``)."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import ipaddress
import os
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from keys.limits import Limits
from site_agent.fetch import Fetcher, ListFetch, Validators

LIMITS = Limits(
    list_deadline=timedelta(seconds=5),
    read_timeout=timedelta(seconds=2),
    connect_timeout=timedelta(seconds=2),
    min_rate=4096,
    rate_grace=timedelta(seconds=0.5),
    download_deadline=timedelta(seconds=10),
    retries=2,
    backoff=timedelta(milliseconds=10),
    max_redirects=3,
    max_list_bytes=64 * 1024,
    free_space_margin=0,
)
"""Short deadlines and backoff so that the suite stays fast."""

ONCE = replace(LIMITS, retries=0)
"""As :data:`LIMITS`, without retries: one attempt per call."""


def image(size: int) -> tuple[bytes, str]:
    """Random bytes of ``size`` and their SHA-512."""
    data = os.urandom(size)
    return data, hashlib.sha512(data).hexdigest()


def fetch_list(
    url: str,
    *,
    validators: Validators | None = None,
    limits: Limits = LIMITS,
    ca_bundle: Path | None = None,
) -> ListFetch:
    async def run() -> ListFetch:
        async with Fetcher(limits=limits, ca_bundle=ca_bundle) as fetcher:
            return await fetcher.fetch_list(url, validators=validators)

    return asyncio.run(run())


def download(
    url: str,
    partial: Path,
    *,
    size: int,
    sha512: str,
    limits: Limits = LIMITS,
    ca_bundle: Path | None = None,
    progress: Callable[[int], None] | None = None,
) -> None:
    async def run() -> None:
        async with Fetcher(limits=limits, ca_bundle=ca_bundle) as fetcher:
            await fetcher.download(
                url, partial=partial, size=size, sha512=sha512, progress=progress
            )

    asyncio.run(run())


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "vmic loopback test server")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "server.pem", folder / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@functools.cache
def namespaces_allowed() -> bool:
    """Whether this machine lets an unprivileged process run ``unshare -rm`` and mount."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return False
    try:
        done = subprocess.run(
            [unshare, "-rm", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"],
            capture_output=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def run_isolated(shell: str, script: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``shell`` (mounts) then ``python -c script args`` in new user and mount namespaces.

    The shell sees the Python command as ``"$@"``; the child shares the network, so it reaches
    the test's loopback simulator.
    """
    command = ["unshare", "-rm", "sh", "-c", f'{shell} && exec "$@"', "sh"]
    return subprocess.run(
        [*command, sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@contextmanager
def silent_server() -> Iterator[str]:
    """A TCP server on 127.0.0.1 that accepts connections and never answers (bounded)."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            accepted.append(connection)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/image.raw"
    finally:
        stop.set()
        thread.join(timeout=5)
        for connection in accepted:
            connection.close()
        listener.close()
