"""The TLS context of the site agent's session: servers verified, the site's certificate shown.

Servers are verified against the system's CAs, or the site's ``[network]
ca_bundle`` (THREATS 25). When the site has an ``[identity]``, its
certificate (the one that signs its export) and chain are loaded as the TLS
client certificate, so that a peer whose `vmic serve` serves peers only
(``[serve] access = "peers"``, :mod:`federation.peer_tls`) knows this site.
TLS sends a client certificate only to a server that asks for one, so an
endorser's web server that does not ask sees no difference. The key file
must be readable by the site only (as grid tools insist), and every file
that cannot be used is a ConfigError naming it. Contexts are kept for the
process (loading the system's CA store takes tens of milliseconds), one per
CA bundle and, with an identity, per state of its files (a renewed
certificate is loaded anew).
"""

from __future__ import annotations

import logging
import ssl
import tempfile
from functools import lru_cache
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from keys.certs import load_certificate, load_certificates, load_private_key
from keys.errors import ConfigError
from site_agent.config import Identity

_log = logging.getLogger("vmic.fetch")


@lru_cache(maxsize=8)
def _tls_context(ca_bundle: str | None) -> ssl.SSLContext:
    """One verifying TLS context per CA bundle for the process: loading the system's CA
    store takes tens of milliseconds, every `vmic subscribe` in a loop would pay it."""
    try:
        return ssl.create_default_context(cafile=ca_bundle)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load the CA bundle {ca_bundle}: {exc}") from exc


_Files = tuple[tuple[int, int, int, int], ...]
"""Files by device, inode, size and modification time: a renewed certificate is new."""


def _files(*paths: Path | None) -> _Files:
    found = []
    for path in paths:
        if path is None:
            continue
        try:
            st = path.stat()
        except OSError as exc:
            raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
        found.append((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(found)


@lru_cache(maxsize=8)
def _client_tls_context(
    ca_bundle: str | None, cert: Path, key: Path, chain: Path | None, _state: _Files
) -> ssl.SSLContext:
    """A verifying TLS context that presents ``cert`` (and ``chain``) with ``key`` to servers
    asking for a client certificate; ``_state`` (:func:`_files`) makes a changed file new."""
    leaf = load_certificate(cert)
    load_private_key(key)  # readable by the site only; ConfigError naming the file
    intermediates = load_certificates(chain) if chain is not None else []
    try:
        context = ssl.create_default_context(cafile=ca_bundle)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load the CA bundle {ca_bundle}: {exc}") from exc
    pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (leaf, *intermediates))
    with tempfile.TemporaryDirectory(prefix="vmic-tls-") as folder:
        both = Path(folder) / "certificate-and-chain.pem"  # public certificates only
        both.write_bytes(pem)
        try:
            context.load_cert_chain(both, key)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"cannot present the site's certificate {cert} with the key {key} in TLS: {exc}",
                hint="check [identity] cert, key and chain in config.toml (the key must be "
                "the certificate's)",
            ) from exc
    return context


def tls_context(ca_bundle: Path | None, identity: Identity | None) -> ssl.SSLContext:
    """The run's TLS context: servers verified against the system's CAs or ``ca_bundle``
    (a CA bundle that cannot be loaded is a ConfigError); with the site's ``identity``, its
    certificate is presented to a server that asks for a client certificate (a peer's
    `vmic serve` with ``access = "peers"``). TLS sends it only when asked: to other servers
    nothing changes. An identity that cannot be presented (a file missing or readable by
    others, a key that is not the certificate's) does not stop the run: it fetches without,
    and the ``vmic.fetch`` log warns once (the export, signed with the same files, reports
    it too). A certificate for signing only (no clientAuth) is not presented either, which
    the log says at INFO level: that is the usual case of a site that serves to anyone."""
    plain = _tls_context(None if ca_bundle is None else str(ca_bundle))
    if identity is None:
        return plain
    try:
        return client_context(ca_bundle, identity)
    except ConfigError as error:
        _note_once(
            identity.cert, "cannot be presented to servers (%s)", error.message, logging.WARNING
        )
        return plain


def client_context(ca_bundle: Path | None, identity: Identity) -> ssl.SSLContext:
    """The TLS context presenting ``identity``; ConfigError naming a file that cannot be
    used. A certificate not for TLS clients is not presented (the plain context)."""
    bundle = None if ca_bundle is None else str(ca_bundle)
    leaf = load_certificate(identity.cert)
    if not _for_clients(leaf):
        _note_once(  # a certificate for signing only: usual, worth a line in the log only
            identity.cert,
            "is not for TLS clients (%s): not presented to servers",
            "no clientAuth in its extended key usage",
            logging.INFO,
        )
        return _tls_context(bundle)
    cert, key, chain = identity.cert, identity.key, identity.chain
    return _client_tls_context(bundle, cert, key, chain, _files(cert, key, chain))


def _note_once(cert: Path, what: str, why: str, level: int) -> None:
    if cert not in _NOT_PRESENTED:
        _NOT_PRESENTED.add(cert)
        _log.log(
            level,
            "the site's certificate %s " + what + "; peers that serve peers only refuse this site",
            cert,
            why,
        )


_NOT_PRESENTED: set[Path] = set()
_CLIENT_USES = frozenset(
    {ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE}
)


def _for_clients(cert: x509.Certificate) -> bool:
    try:
        uses = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return True
    return bool(_CLIENT_USES & set(uses))
