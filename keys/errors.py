"""The error tree of vmic: one root, one branch per kind of failure.

`keys` is the bottom of the dependency graph (``keys`` <- ``feeds`` <-
``site_agent`` <- ``federation``), so the whole tree lives here and every
package raises from it. Each error carries a short ``hint`` for the person at
the terminal; the CLI prints the message and the hint and maps the class to
an exit code. Other libraries' exceptions are wrapped at the boundary
(``raise SignatureError(...) from exc``), never parsed; where bytes from
outside meet a parser, :func:`outside_bytes` turns *whatever* it raises
into the vmic error of that place (THREATS 33).

    VmicError
    ├── ConfigError                 bad arguments, configuration, manifest, key files
    ├── ListFormatError             not a well-formed document of the vmic profile
    ├── VerificationError           a well-formed document that must not be trusted
    │   ├── SignatureError          missing, off-profile or non-matching signature
    │   ├── CertificateError        signer chain does not validate
    │   │   └── RevokedError        a chain certificate is revoked, or its CRL is missing/stale
    │   ├── UntrustedSignerError    valid chain, but not a pinned endorser / DN mismatch
    │   ├── FreshnessError          list expired, or `updated` in the future
    │   ├── WrongListError          another list than the one subscribed (id, self link)
    │   └── RollbackError           older version, same version with other bytes, fast-forward
    ├── FetchError                  getting bytes over the network failed
    │   ├── HTTPStatusError         the server answered with an unexpected status
    │   ├── FetchTimeoutError       deadline passed or transfer too slow
    │   └── TooLargeError           more bytes than allowed
    ├── IntegrityError              bytes do not match what the signed list promises
    │   ├── DigestMismatchError     SHA-512 differs
    │   └── SizeMismatchError       size differs
    ├── StoreError                  the site's local state cannot be used
    │   └── DiskFullError           no room for a download or a write
    ├── LockedError                 another vmic run holds the site's lock
    ├── PolicyError                 an image breaks the trusted-image policy
    └── CloudError                  the site's cloud (OpenStack Glance) refused or failed
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


class VmicError(Exception):
    """Root of every error vmic raises on purpose."""

    default_hint = ""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = self.default_hint if hint is None else hint


class ConfigError(VmicError):
    default_hint = "check the command line, the configuration or the manifest"


class ListFormatError(VmicError):
    default_hint = "the document is not an image list of the vmic profile (see feeds/SCHEMA.md)"


class VerificationError(VmicError):
    default_hint = "the list was not trusted; the site keeps its last good list"


class SignatureError(VerificationError):
    default_hint = "the document was changed after signing, or not signed to the vmic profile"


class CertificateError(VerificationError):
    default_hint = "check the signer's certificate chain against the trust directory"


class RevokedError(CertificateError):
    default_hint = "a certificate is revoked, or its CRL is missing or stale (run fetch-crl?)"


class UntrustedSignerError(VerificationError):
    default_hint = "the signer is not a pinned endorser; compare the full subject and issuer DNs"


class FreshnessError(VerificationError):
    default_hint = "the endorser must re-sign the list; check this machine's clock too"


class WrongListError(VerificationError):
    default_hint = "the server returned a different list than the one subscribed to"


class RollbackError(VerificationError):
    default_hint = "a list older than (or conflicting with) one already seen was offered"


class FetchError(VmicError):
    default_hint = "check the URL, the network and the server"


class HTTPStatusError(FetchError):
    pass


class FetchTimeoutError(FetchError):
    default_hint = "the server was too slow; it will be retried on the next run"


class TooLargeError(FetchError):
    default_hint = "the server sent more bytes than allowed; raise the limit only if expected"


class IntegrityError(VmicError):
    default_hint = "the bytes do not match the signed list; they were discarded"


class DigestMismatchError(IntegrityError):
    pass


class SizeMismatchError(IntegrityError):
    pass


class StoreError(VmicError):
    default_hint = "the site's local state is damaged or unusable; nothing was changed"


class DiskFullError(StoreError):
    default_hint = "free space on the cache's file system; partial files were removed"


class LockedError(VmicError):
    default_hint = "another `vmic` run is working on this site; this one did nothing"


class CloudError(VmicError):
    default_hint = "check the cloud (clouds.yaml entry, Glance, quota); the next run tries again"


class PolicyError(VmicError):
    default_hint = (
        "remove what the findings name from the image and build it again, or endorse it "
        'with --policy-override "why" (the reason is published in the signed list)'
    )


def describe(exc: BaseException) -> str:
    """How a message names what a library raised: its text, with the type when not obvious."""
    if isinstance(exc, VmicError):
        return exc.message
    if isinstance(exc, ValueError) and str(exc):
        return str(exc)
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


@contextmanager
def outside_bytes(what: str, error: type[VmicError]) -> Iterator[None]:
    """Run a parse or check of outside bytes; any failure that is not already a vmic
    error leaves as ``error`` ("``what``: reason"), with the original as its cause.

    Bytes from a list, an export, a peer, an HTTP answer or the trust directory
    may be anything; a library meeting them may raise anything. No such
    exception may end a sync: it is a rejection of that input.
    """
    try:
        yield
    except VmicError:
        raise
    except Exception as exc:  # a library may raise anything on such bytes
        raise error(f"{what}: {describe(exc)}") from exc
