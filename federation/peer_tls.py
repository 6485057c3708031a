"""Serving to peers only: which clients of `vmic serve` may fetch the export, lists and images.

With ``[serve] access = "peers"`` a request for anything but ``/healthz``,
``/metrics`` and (with ``public_catalogue``, the default) the catalogue
``/``, ``/image/<uuid>`` and the API ``/api/...`` needs a client certificate
(mutual TLS) of an allowed peer; any other request gets ``403`` with a short
reason, and the details go to the ``vmic.serve`` log. Which routes are open
is decided by the route aiohttp matched, never by the path's text, and
everything not named open is protected (an unknown path too).

Who checks what. Python 3.11's ssl module cannot make OpenSSL only *ask*
for a client certificate: with ``CERT_OPTIONAL`` OpenSSL verifies whatever
certificate a client sends and ends the handshake on any error, and there
is no verify callback to overrule it. So both check, and OpenSSL is set
(:meth:`PeerGate.prepare_tls`) to refuse only what vmic refuses anyway:

- OpenSSL asks every client for a certificate; a client without one still
  connects (for ``/healthz``, ``/metrics`` and a public catalogue). A
  certificate sent must chain, by its signatures, to a CA certificate of
  the trust directory (vmic's :class:`~keys.trust.TrustStore` hands it the
  anchors and intermediates, and the CAs a reload finds) and be fit for TLS
  clients (an extended key usage, if any, naming clientAuth). Dates are not
  checked there (``X509_V_FLAG_NO_CHECK_TIME``), nor CRLs or namespaces, so
  that an expired or revoked certificate gets a 403 that says so. The
  handshake proves the client holds the key of the certificate it sent.
- vmic (:func:`check_client`, pure) then judges that certificate as every
  signer's: the leaf from ``getpeercert(binary_form=True)``, its chain
  completed from the trust directory, :meth:`TrustStore.validate` at the
  time of the request (dates, RFC 5280 path, key strength, CRLs as ``[trust]
  crl`` says, IGTF namespaces), clientAuth, and last its subject and issuer
  DN against the pins of the peers the site follows (`vmic peer add`, read
  from the store as it changes) and ``[serve] allowed_peers``.

So a chain to no CA of the trust directory, or a certificate not meant for
TLS clients, is refused in the handshake (a TLS alert; asyncio logs no
failed handshake) and such a client gets nothing, not even a public page;
every other refusal is a 403 naming why: no certificate, not an allowed
peer, revoked (or no current CRL), untrusted chain, expired, not yet valid.

The verdict is kept per TLS connection (by its ``SSLObject``, with the
certificate's bytes; renegotiation is off, so a connection keeps the
certificate it was judged by), not per request, and only while it holds:
until the earliest end of validity in the chain and the earliest
nextUpdate of a CRL in the trust directory, at most
:data:`VERDICT_SECONDS`, and only while the allowed peers and the trust
directory are the same (the directory is looked at every
:data:`TRUST_RECHECK_SECONDS` and reloaded, on a worker thread, when a
file in it changed; when it cannot be loaded, protected requests get 503).
The listener's fast lane answers nothing but ``/healthz`` on such a server
(:class:`federation.server.Lane`), so every protected request passes here.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import re
import ssl
import weakref
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Handler
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from federation.serve_state import ServeState, StoreMemo
from keys.certs import load_der_certificate, read_outside
from keys.dn import DistinguishedName
from keys.errors import CertificateError, ConfigError, RevokedError, VmicError, outside_bytes
from keys.fileio import list_directory, read_regular
from keys.trust import CrlPolicy, TrustStore
from keys.xmlsig import SignerPin
from site_agent.peerstore import PeerStore
from site_agent.serve_settings import Access
from site_agent.store import Store

NO_CHECK_TIME = 0x200000
"""OpenSSL's ``X509_V_FLAG_NO_CHECK_TIME`` (x509_vfy.h, OpenSSL 1.1.0 on), which
``ssl.VerifyFlags`` does not name: OpenSSL leaves the dates to vmic."""
VERDICT_SECONDS = 600.0
"""The longest a connection's verdict is kept before it is judged again."""
TRUST_RECHECK_SECONDS = 30.0
"""How often the trust directory is looked at for changed files (CRLs from fetch-crl)."""
ALWAYS_OPEN = frozenset({"/healthz", "/metrics"})
CATALOGUE = frozenset({"/", "/image/{id}"})
"""Catalogue routes, open with ``public_catalogue``; so is every route under ``/api/``."""
_CRL_NAME = re.compile(r"^[0-9a-f]{8}\.r[0-9]$|\.crl\.pem$", re.IGNORECASE)
"""CRL files, named as :mod:`keys.trust` reads them."""
_CLIENT_USES = frozenset(
    {ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE}
)
log = logging.getLogger("vmic.serve")


class Refusal(StrEnum):
    """Why a client may not fetch: the text of the 403."""

    NO_CERTIFICATE = "no client certificate"
    UNKNOWN_PEER = "the client certificate's DN is not that of an allowed peer"
    REVOKED = "the client certificate is revoked, or its CA has no current CRL here"
    UNTRUSTED = "the client certificate's chain is not trusted"
    EXPIRED = "the client certificate has expired"
    NOT_YET_VALID = "the client certificate is not valid yet"
    NOT_FOR_CLIENTS = "the client certificate is not for TLS clients"


@dataclass(frozen=True, slots=True, kw_only=True)
class Verdict:
    """Whether one client certificate may fetch, why not, and until when that holds."""

    refusal: Refusal | None
    """None: an allowed peer."""
    detail: str
    """For the log: the DN and what exactly was wrong."""
    until: datetime

    @property
    def allowed(self) -> bool:
        return self.refusal is None


def check_client(
    der: bytes | None,
    *,
    trust: TrustStore,
    crl: CrlPolicy,
    allowed: Collection[SignerPin],
    at: datetime,
    crl_horizon: datetime | None = None,
) -> Verdict:
    """The verdict on a client's certificate (DER, as TLS gave it; None: none was sent) at
    ``at``: dates, fitness for TLS clients, the chain as :meth:`TrustStore.validate` checks
    it, then the subject and issuer DN against ``allowed``. Never raises: bytes that are no
    certificate are a refusal too. ``crl_horizon``: when a CRL of the trust directory is
    next due (an allowed verdict holds no longer)."""
    longest = at + timedelta(seconds=VERDICT_SECONDS)
    if der is None:
        return Verdict(
            refusal=Refusal.NO_CERTIFICATE, detail="no client certificate", until=longest
        )
    try:
        with outside_bytes("the client certificate", CertificateError):
            return _check(
                der,
                trust=trust,
                crl=crl,
                allowed=allowed,
                at=at,
                longest=longest,
                crl_horizon=crl_horizon,
            )
    except RevokedError as exc:
        return Verdict(refusal=Refusal.REVOKED, detail=exc.message, until=longest)
    except VmicError as exc:
        return Verdict(refusal=Refusal.UNTRUSTED, detail=exc.message, until=longest)


def _check(
    der: bytes,
    *,
    trust: TrustStore,
    crl: CrlPolicy,
    allowed: Collection[SignerPin],
    at: datetime,
    longest: datetime,
    crl_horizon: datetime | None,
) -> Verdict:
    leaf = load_der_certificate(der, what="the client certificate")
    subject = DistinguishedName.from_x509(leaf.subject)
    issuer = DistinguishedName.from_x509(leaf.issuer)
    who = f"{subject} (issuer {issuer})"
    if at < leaf.not_valid_before_utc:
        detail = f"{who} is not valid before {leaf.not_valid_before_utc:%Y-%m-%d %H:%M}Z"
        return Verdict(refusal=Refusal.NOT_YET_VALID, detail=detail, until=longest)
    if at >= leaf.not_valid_after_utc:
        detail = f"{who} expired on {leaf.not_valid_after_utc:%Y-%m-%d %H:%M}Z"
        return Verdict(refusal=Refusal.EXPIRED, detail=detail, until=longest)
    try:
        uses = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        uses = None
    if uses is not None and not _CLIENT_USES & set(uses):
        detail = f"{who} has no extended key usage clientAuth"
        return Verdict(refusal=Refusal.NOT_FOR_CLIENTS, detail=detail, until=longest)
    chain = trust.validate(leaf, [], at=at, crl=crl)
    if not any(pin.matches(chain.leaf) for pin in allowed):
        detail = f"{who} is neither a peer this site follows nor in [serve] allowed_peers"
        return Verdict(refusal=Refusal.UNKNOWN_PEER, detail=detail, until=longest)
    ends = [c.not_valid_after_utc for c in chain.certificates]
    until = min([*ends, longest, *([crl_horizon] if crl_horizon is not None else [])])
    return Verdict(refusal=None, detail=f"{who} is an allowed peer", until=until)


# -- the trust directory, as the check sees it -----------------------------------------------
Fingerprint = tuple[tuple[object, ...], ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class TrustSnapshot:
    """The trust directory at one moment: the store, when its CRLs are due, its CAs in PEM."""

    store: TrustStore
    fingerprint: Fingerprint
    crl_updates: tuple[datetime, ...]
    """The nextUpdate of every CRL file that could be read, in order."""
    cadata: str
    """The CA certificates (anchors and intermediates), for OpenSSL."""

    def crl_horizon(self, at: datetime) -> datetime | None:
        """The first nextUpdate after ``at``: a CRL may go stale or be replaced then."""
        index = bisect.bisect_right(self.crl_updates, at)
        return self.crl_updates[index] if index < len(self.crl_updates) else None


def fingerprint(directory: Path) -> Fingerprint:
    """What changes when a file of the folder is added, removed, replaced or rewritten."""
    seen: list[tuple[object, ...]] = []
    for path in list_directory(directory, what="the trust directory"):
        try:
            st = path.stat()
        except OSError as exc:
            seen.append((path.name, exc.errno))
            continue
        seen.append((path.name, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
    return tuple(seen)


def load_trust(directory: Path) -> TrustSnapshot:
    """Read the trust directory (blocking; ConfigError when it cannot be used at all)."""
    seen = fingerprint(directory)
    store = TrustStore.from_directory(directory)
    updates: list[datetime] = []
    for path in list_directory(directory, what="the trust directory"):
        if _CRL_NAME.search(path.name):
            due = _next_update(path)
            if due is not None:
                updates.append(due)
    cas = (*store.anchors, *store.intermediates)
    cadata = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in cas)
    return TrustSnapshot(
        store=store, fingerprint=seen, crl_updates=tuple(sorted(updates)), cadata=cadata.decode()
    )


def _next_update(path: Path) -> datetime | None:
    """A CRL file's nextUpdate; None when it cannot be read (TrustStore reports that file)."""

    def read() -> datetime | None:
        data = read_regular(path)
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_crl(data).next_update_utc
        return x509.load_der_x509_crl(data).next_update_utc

    try:
        return read_outside(read)[0]
    except ValueError:
        return None


class _Trust:
    """The snapshot in use, looked at again every :data:`TRUST_RECHECK_SECONDS`."""

    def __init__(
        self, directory: Path, snapshot: TrustSnapshot, on_change: Callable[[TrustSnapshot], None]
    ) -> None:
        self._directory = directory
        self._snapshot = snapshot
        self._on_change = on_change
        self._next_look = 0.0
        self._failure: VmicError | None = None
        self._looking: asyncio.Future[TrustSnapshot] | None = None

    @property
    def snapshot(self) -> TrustSnapshot:
        """The last snapshot loaded (whether or not it is still current)."""
        return self._snapshot

    def look_again(self) -> None:
        """Look at the directory before the next verdict, however recent the last look."""
        self._next_look = 0.0

    async def current(self) -> TrustSnapshot:
        """The snapshot to judge with now; VmicError while the directory cannot be used."""
        loop = asyncio.get_running_loop()
        if loop.time() < self._next_look:
            if self._failure is not None:
                raise self._failure
            return self._snapshot
        if self._looking is None:
            self._looking = asyncio.ensure_future(self._look())
        looking = self._looking
        try:
            return await asyncio.shield(looking)
        finally:
            if looking.done() and self._looking is looking:
                self._looking = None

    async def _look(self) -> TrustSnapshot:
        loop = asyncio.get_running_loop()
        try:
            seen = await asyncio.to_thread(fingerprint, self._directory)
            if seen != self._snapshot.fingerprint or self._failure is not None:
                snapshot = await asyncio.to_thread(load_trust, self._directory)
                self._snapshot, self._failure = snapshot, None
                self._on_change(snapshot)
                log.info("trust directory %s changed: reloaded", self._directory)
        except VmicError as exc:
            self._failure = exc
            raise
        finally:
            self._next_look = loop.time() + TRUST_RECHECK_SECONDS
        return self._snapshot


# -- the gate in front of the routes ---------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Kept:
    """A connection's verdict and what it rests on: the certificate, the trust directory and
    the allowed peers as they were."""

    verdict: Verdict
    der: bytes | None
    snapshot: TrustSnapshot
    allowed: tuple[SignerPin, ...]


def _followed(store: Store, _key: None) -> tuple[SignerPin, ...]:
    return tuple(pin for peer in PeerStore(store).peers() for pin in peer.pins)


class PeerGate:
    """``access = "peers"`` for one application: the open routes, the verdict per connection."""

    def __init__(self, state: ServeState, snapshot: TrustSnapshot) -> None:
        settings = state.config.serve
        self._public_catalogue = settings.public_catalogue
        self._listed = settings.allowed_peers
        self._crl = state.config.crl
        self._clock = state.clock
        self._followed = StoreMemo(state.reader, state.watch, _followed)
        self._trust = _Trust(state.config.trust_dir, snapshot, self._add_cas)
        self._contexts: list[ssl.SSLContext] = []
        self._kept: weakref.WeakKeyDictionary[ssl.SSLObject, _Kept] = weakref.WeakKeyDictionary()
        self.checks = 0
        """Verdicts made (one per connection, unless one expired or what it rests on changed)."""
        self.refused = 0
        """Requests answered 403."""

    # -- OpenSSL's part
    def prepare_tls(self, context: ssl.SSLContext | None) -> None:
        """Make the server's TLS ask for client certificates (see the module's docstring)."""
        if context is None:
            raise ConfigError(
                '[serve] access = "peers" needs vmic serve to speak TLS itself',
                hint="set [serve] tls_cert and tls_key",
            )
        context.verify_mode = ssl.CERT_OPTIONAL
        context.options |= ssl.OP_NO_RENEGOTIATION  # one certificate per connection (TLS 1.2)
        context.verify_flags = ssl.VerifyFlags(context.verify_flags | NO_CHECK_TIME)
        context.load_verify_locations(cadata=self._trust.snapshot.cadata)
        self._contexts.append(context)

    def _add_cas(self, snapshot: TrustSnapshot) -> None:
        """A CA new in the trust directory is known to OpenSSL from now on (one taken out
        stays there until a restart, but vmic's own check no longer accepts it)."""
        for context in self._contexts:
            try:
                context.load_verify_locations(cadata=snapshot.cadata)
            except ssl.SSLError as exc:
                _report(f"cannot give TLS the CAs of {snapshot.store.source}: {exc}")

    def look_again(self) -> None:
        """Look at the trust directory before the next verdict (after fetch-crl, say)."""
        self._trust.look_again()

    # -- vmic's part
    def is_open(self, request: web.Request) -> bool:
        """Whether anyone may have the route ``request`` matched (none matched: protected)."""
        resource = request.match_info.route.resource
        if resource is None:
            return False
        path = resource.canonical
        if path in ALWAYS_OPEN:
            return True
        return self._public_catalogue and (path in CATALOGUE or path.startswith("/api/"))

    async def verdict(self, request: web.Request) -> Verdict:
        """The verdict on the connection ``request`` came on; VmicError when it cannot be made
        now (the trust directory or the store cannot be read)."""
        transport = request.transport
        tls = transport.get_extra_info("ssl_object") if transport is not None else None
        now = self._clock()
        if not isinstance(tls, ssl.SSLObject):
            detail = "a connection without TLS"
            return Verdict(refusal=Refusal.NO_CERTIFICATE, detail=detail, until=now)
        snapshot = await self._trust.current()
        allowed = (*await self._followed.get(None), *self._listed)
        kept = self._kept.get(tls)
        der = tls.getpeercert(binary_form=True)
        if (
            kept is not None
            and kept.der == der
            and kept.snapshot is snapshot
            and kept.allowed == allowed
            and now < kept.verdict.until
        ):
            return kept.verdict
        verdict = await asyncio.to_thread(
            check_client,
            der,
            trust=snapshot.store,
            crl=self._crl,
            allowed=allowed,
            at=now,
            crl_horizon=snapshot.crl_horizon(now),
        )
        self.checks += 1
        self._kept[tls] = _Kept(verdict=verdict, der=der, snapshot=snapshot, allowed=allowed)
        level = (
            logging.INFO if verdict.refusal in (None, Refusal.NO_CERTIFICATE) else logging.WARNING
        )
        log.log(level, "client %s: %s", _shown(str(request.remote)), _shown(verdict.detail))
        return verdict

    async def guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """The middleware: the route's handler runs only for an open route or an allowed peer."""
        if self.is_open(request):
            return await handler(request)
        try:
            verdict = await self.verdict(request)
        except VmicError as exc:
            _report(f"cannot check client certificates: {exc.message}")
            return web.Response(status=503, text="503: client certificates cannot be checked now\n")
        if verdict.refusal is None:
            return await handler(request)
        self.refused += 1
        log.info(
            "%s %s from %s: 403, %s",
            request.method,
            _shown(request.path),
            _shown(str(request.remote)),
            verdict.refusal,
        )
        return web.Response(status=403, text=f"403: {verdict.refusal}\n")


PEER_GATE = web.AppKey("vmic_peer_gate", PeerGate)
"""The gate of an application made with ``access = "peers"`` (:func:`federation.listener.start`
prepares the TLS context with it)."""


def install(app: web.Application, state: ServeState) -> None:
    """Put ``[serve] access`` in front of every route of ``app`` (before it is started): with
    "peers", the gate is the outermost middleware; with "anyone", nothing changes. Reads the
    trust directory (ConfigError when it cannot be used)."""
    if state.config.serve.access == Access.ANYONE:
        return  # anything else is checked (a value other than "anyone" fails closed)
    gate = PeerGate(state, load_trust(state.config.trust_dir))
    app[PEER_GATE] = gate

    @web.middleware
    async def peers_only(request: web.Request, handler: Handler) -> web.StreamResponse:
        return await gate.guard(request, handler)

    app.middlewares.insert(0, peers_only)


_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _report(message: str) -> None:
    log.error("%s", _shown(message))


def _shown(text: str) -> str:
    """Text from a client (a DN, a path) as one log line: control characters escaped."""
    return _UNPRINTABLE.sub(lambda m: ascii(m.group())[1:-1], text)
