"""Benchmark: vmic list verification against xmlsec1 and openssl on the same signed lists.

Builds an image list of ``--entries`` images (default 10,000), signs it with a
freshly issued endorser certificate from a throw-away dev CA (keys.pki), as
an Atom list (enveloped XML signature) and as a HEPiX list (JSON signed as
S/MIME), and then times, in the same run and on the same files:

- vmic: :func:`feeds.verify.verify_list` in-process: byte cap, hardened parse,
  signature profile, chain + CRL against the CA folder as trust store, the
  signature value and digest, the re-parse of the signed content, the pins,
  and reading the list into the model (for HEPiX: the S/MIME signature, the
  JSON, the named signer, chain + CRL, pins);
- xmlsec1: ``xmlsec1 --verify --trusted-pem ca.pem`` on the Atom list, and
  ``openssl smime -verify`` on the HEPiX list, as subprocesses: signature and
  chain only (no CRL, no model). Both include process start, which is
  measured separately on a tiny signed Atom list and printed.

Each vmic run alternates with a run of the tool it is compared with, so that
both see the same machine (a busy neighbour slows both, not one); garbage of
earlier runs is collected before each run, outside the timing. The best runs
are compared. Targets (issue 12): vmic <= 2x xmlsec1 and <= 2x openssl.
Missing them is reported, not fatal: the exit code is non-zero only when
verification fails. Everything is local; nothing touches the network.

It then breaks vmic's time down (each part timed alone) and, with
``--profile``, prints a cProfile of one verify_list of each list.

    .venv/bin/python bench/verify.py [--entries N] [--repeat N] [--key-type rsa|ec]
    .venv/bin/python bench/verify.py --profile   # adds a cProfile of each verify_list
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import hashlib
import io
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

from cryptography import x509
from lxml import etree

from feeds.atom import FEED_TAG, render_list
from feeds.hepix import read_hepix, render_hepix
from feeds.model import ImageEntry, ImageList, image_id, list_id, sha512_hex
from feeds.reader import read_list
from feeds.verify import VerifiedList, verify_list
from keys import xmlsig
from keys.certs import PrivateKey, load_certificate, load_private_key
from keys.dn import DistinguishedName
from keys.errors import VmicError
from keys.limits import DEFAULT_LIMITS
from keys.pki import CA_CERT, create_ca, issue
from keys.smime import sign_smime, verify_smime
from keys.trust import TrustStore
from keys.xmlsafe import parse_untrusted
from keys.xmlsig import SignerPin, sign_enveloped

T = TypeVar("T")

RATIO_TARGET = 2.0
HEPIX_RATIO_TARGET = 2.0
SECONDS_TARGET = 1.0
MB = 1_000_000
CA_DN = "/DC=org/DC=example/O=vmic bench/CN=vmic bench CA"
ENDORSER_DN = "/DC=org/DC=example/O=vmic bench/OU=Endorsers/CN=Bench Endorser"
LIST_UUID = "5b0c7d2e-1f3a-4c6b-8d9e-0a1b2c3d4e5f"


# -- building the signed list ---------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Fixture:
    """A CA folder (the trust store), the endorser, and two signed lists on disk."""

    ca_dir: Path
    ca_pem: Path
    trust: TrustStore
    pin: SignerPin
    signer: x509.Certificate
    signed_path: Path
    raw: bytes
    tiny_path: Path
    now: datetime
    hepix_path: Path
    hepix_raw: bytes
    entries: int


class CountError(Exception):
    """vmic read another number of images than the list has."""


def _entry(n: int, *, now: datetime) -> ImageEntry:
    payload = f"bench image {n}".encode()
    return ImageEntry(
        id=image_id(f"00000000-0000-4000-8000-{n:012x}"),
        title=f"Bench image {n}",
        summary=f"A benchmark image, number {n}, with a summary of ordinary length",
        url=f"https://images.example.org/bench/img-{n}.qcow2",
        size=1_073_741_824 + n,
        sha512=sha512_hex(hashlib.sha512(payload).hexdigest()),
        format="qcow2",
        updated=now - timedelta(days=1),
        endorsed=now - timedelta(days=1),
        hypervisor="KVM",
        arch="x86_64",
        os="Linux",
        osname="AlmaLinux",
        osversion="9.4",
        version=f"1.{n}",
        produced=now - timedelta(days=2),
        vo="dteam",
        tags=("bench", "linux"),
    )


def _image_list(entries: int, *, now: datetime, signer: x509.Certificate) -> ImageList:
    return ImageList(
        id=list_id(LIST_UUID),
        title="vmic benchmark list",
        self_url="https://endorser.example.org/lists/bench.atom",
        updated=now - timedelta(minutes=10),
        expires=now + timedelta(days=28),
        version=1,
        endorser_dn=DistinguishedName.from_x509(signer.subject),
        issuer_dn=DistinguishedName.from_x509(signer.issuer),
        author_name="Bench Endorser",
        author_email="bench@example.org",
        entries=tuple(_entry(n, now=now) for n in range(1, entries + 1)),
    )


def _sign(image_list: ImageList, *, key: PrivateKey, cert: x509.Certificate) -> bytes:
    return sign_enveloped(render_list(image_list), key=key, cert=cert)


def build_fixture(workdir: Path, *, entries: int, key_type: str) -> Fixture:
    now = datetime.now(UTC)
    ca_dir = workdir / "ca"
    ca = create_ca(DistinguishedName.parse_slash(CA_DN), ca_dir, now=now, key_type=key_type)
    endorser_dir = workdir / "endorser"
    issue(
        ca,
        DistinguishedName.parse_slash(ENDORSER_DN),
        endorser_dir,
        now=now,
        email="bench@example.org",
        key_type=key_type,
    )
    key = load_private_key(endorser_dir / "key.pem")
    cert = load_certificate(endorser_dir / "cert.pem")
    # Verify a little later than signing, as a site would; well inside every validity window.
    at = now + timedelta(seconds=1)

    raw = _sign(_image_list(entries, now=now, signer=cert), key=key, cert=cert)
    signed_path = workdir / "list.atom"
    signed_path.write_bytes(raw)
    tiny_path = workdir / "tiny.atom"
    tiny_path.write_bytes(_sign(_image_list(1, now=now, signer=cert), key=key, cert=cert))
    hepix_raw = sign_smime(
        render_hepix(_image_list(entries, now=now, signer=cert)), key=key, cert=cert
    )
    hepix_path = workdir / "list.smime"
    hepix_path.write_bytes(hepix_raw)

    return Fixture(
        ca_dir=ca_dir,
        ca_pem=ca_dir / CA_CERT,
        trust=TrustStore.from_directory(ca_dir),
        pin=SignerPin(
            subject=DistinguishedName.from_x509(cert.subject),
            issuer=DistinguishedName.from_x509(cert.issuer),
        ),
        signer=cert,
        signed_path=signed_path,
        raw=raw,
        tiny_path=tiny_path,
        now=at,
        hepix_path=hepix_path,
        hepix_raw=hepix_raw,
        entries=entries,
    )


# -- timing ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Timings:
    samples: list[float]

    @property
    def best(self) -> float:
        return min(self.samples)

    @property
    def median(self) -> float:
        return statistics.median(self.samples)


def timed(fn: Callable[[], T]) -> tuple[float, T]:
    gc.collect()  # earlier runs' garbage is not this run's cost
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def repeat(fn: Callable[[], object], times: int) -> Timings:
    return Timings([timed(fn)[0] for _ in range(times)])


def paired(
    first: Callable[[], object], second: Callable[[], object], times: int
) -> tuple[Timings, Timings]:
    """``times`` runs of each, alternating, so that both meet the same machine."""
    a: list[float] = []
    b: list[float] = []
    for _ in range(times):
        a.append(timed(first)[0])
        b.append(timed(second)[0])
    return Timings(a), Timings(b)


def run_vmic(fx: Fixture) -> VerifiedList:
    """The full vmic verification; the caller's later free of the result is not timed."""
    return verify_list(fx.raw, trust=fx.trust, pins=[fx.pin], now=fx.now)


def run_vmic_hepix(fx: Fixture) -> VerifiedList:
    return verify_list(fx.hepix_raw, trust=fx.trust, pins=[fx.pin], now=fx.now)


def run_openssl_smime(fx: Fixture) -> None:
    subprocess.run(
        [
            "openssl",
            "smime",
            "-verify",
            "-in",
            str(fx.hepix_path),
            "-CAfile",
            str(fx.ca_pem),
            "-purpose",
            "any",
            "-out",
            "/dev/null",
        ],
        check=True,
        capture_output=True,
    )


def run_xmlsec1(fx: Fixture, path: Path) -> None:
    subprocess.run(
        [
            "xmlsec1",
            "--verify",
            "--trusted-pem",
            str(fx.ca_pem),
            "--enabled-reference-uris",
            "empty",
            str(path),
        ],
        check=True,
        capture_output=True,
    )


# -- where vmic's time goes --------------------------------------------------------


def rounds(parts: dict[str, Callable[[], object]], times: int) -> dict[str, float]:
    """Best-of-``times`` for each part, the parts taking turns within each round, so that
    all of them meet the same machine (the sum of the parts then fits the whole)."""
    samples: dict[str, list[float]] = {name: [] for name in parts}
    for _ in range(times):
        for name, fn in parts.items():
            samples[name].append(timed(fn)[0])
    return {name: min(values) for name, values in samples.items()}


def atom_breakdown(fx: Fixture, times: int) -> tuple[float, list[tuple[str, float]]]:
    """verify_list of the Atom list and its parts, each run alone."""

    def check_signature() -> etree._Element:
        verified = xmlsig.verify_enveloped(
            fx.raw, trust=fx.trust, pins=[fx.pin], at=fx.now, root_tag=FEED_TAG
        )
        return verified.root

    signed_root = check_signature()
    best = rounds(
        {
            "total": lambda: run_vmic(fx),
            "signature": check_signature,
            "parse": lambda: parse_untrusted(fx.raw, limits=DEFAULT_LIMITS),
            "reader": lambda: read_list(signed_root, limits=DEFAULT_LIMITS),
        },
        times,
    )
    total, signature, reader = best["total"], best["signature"], best["reader"]
    return total, [
        ("keys.xmlsig.verify_enveloped (all of the below)", signature),
        ("  of it: keys.xmlsafe.parse_untrusted (the bytes)", best["parse"]),
        ("  of it: the rest (chain, CRL, C14N, digests, re-parse)", signature - best["parse"]),
        ("feeds.reader.read_list (signed tree -> model)", reader),
        ("rest (sha256 of the bytes, checks, frees)", total - signature - reader),
    ]


def hepix_breakdown(fx: Fixture, times: int) -> tuple[float, list[tuple[str, float]]]:
    """verify_list of the HEPiX list and its parts, each run alone."""
    content = verify_smime(fx.hepix_raw, limits=DEFAULT_LIMITS).content
    best = rounds(
        {
            "total": lambda: run_vmic_hepix(fx),
            "smime": lambda: verify_smime(fx.hepix_raw, limits=DEFAULT_LIMITS),
            "reader": lambda: read_hepix(content, limits=DEFAULT_LIMITS),
        },
        times,
    )
    total, smime, reader = best["total"], best["smime"], best["reader"]
    return total, [
        ("keys.smime.verify_smime (MIME, CMS, digest)", smime),
        ("feeds.hepix.read_hepix (JSON -> model)", reader),
        ("rest (chain, CRL, sha256 of bytes and content)", total - smime - reader),
    ]


def print_breakdown(title: str, total: float, steps: list[tuple[str, float]]) -> None:
    print(f"\n{title} (each part timed alone, best of runs):")
    print(f"  {'total verify_list':<56} {total:.4f} s")
    for label, seconds in steps:
        print(f"  {label:<56} {seconds:.4f} s  {_pct(seconds, total)}")


def print_profile(label: str, fn: Callable[[], object], top: int) -> None:
    profiler = cProfile.Profile()
    profiler.enable()
    fn()
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats(pstats.SortKey.TIME).print_stats(top)
    print(f"\ncProfile of one verify_list of the {label}, top {top} by own time:")
    print(out.getvalue().rstrip())


# -- main -------------------------------------------------------------------------


def _pct(part: float, whole: float) -> str:
    return f"{100 * part / whole:5.1f}%" if whole > 0 else "  n/a"


def _verdict(met: bool) -> str:
    return "target met" if met else "target missed"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Time vmic verify_list against xmlsec1 --verify and openssl smime -verify "
        "on one signed image list (Atom and HEPiX)."
    )
    parser.add_argument("--entries", type=int, default=10_000, help="images in the list")
    parser.add_argument(
        "--repeat", type=int, default=5, help="runs per side (best and median are reported)"
    )
    parser.add_argument("--key-type", choices=("rsa", "ec"), default="rsa")
    parser.add_argument(
        "--profile", action="store_true", help="also print a cProfile of each verify_list"
    )
    args = parser.parse_args(argv)
    if args.entries < 1 or args.repeat < 1:
        parser.error("--entries and --repeat must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for tool in ("xmlsec1", "openssl"):
        if shutil.which(tool) is None:
            print(f"{tool} is not on PATH", file=sys.stderr)
            return 2
    with tempfile.TemporaryDirectory(prefix="vmic-bench-") as tmp:
        build_seconds, fx = timed(
            lambda: build_fixture(Path(tmp), entries=args.entries, key_type=args.key_type)
        )
        print(
            f"document: {len(fx.raw) / MB:.2f} MB Atom, {len(fx.hepix_raw) / MB:.2f} MB HEPiX, "
            f"{args.entries} entries, {args.key_type} signer "
            f"(built and signed in {build_seconds:.2f} s)"
        )
        try:
            _atom_section(fx, args.repeat)
            _hepix_section(fx, args.repeat)
        except (VmicError, CountError) as exc:
            print(f"vmic verification failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
        except subprocess.CalledProcessError as exc:
            detail = exc.stderr.decode(errors="replace").strip() if exc.stderr else ""
            print(
                f"{exc.cmd[0]} verification failed (exit {exc.returncode}): {detail}",
                file=sys.stderr,
            )
            return 1
        print_breakdown("vmic breakdown, Atom", *atom_breakdown(fx, args.repeat))
        print_breakdown("vmic breakdown, HEPiX", *hepix_breakdown(fx, args.repeat))
        if args.profile:
            print_profile("Atom list", lambda: run_vmic(fx), top=25)
            print_profile("HEPiX list", lambda: run_vmic_hepix(fx), top=25)
    return 0


def _atom_section(fx: Fixture, times: int) -> None:
    # Warm up both sides once (imports, page cache) and check that they verify.
    listed = len(run_vmic(fx).image_list.entries)
    if listed != fx.entries:
        raise CountError(f"vmic read {listed} entries, expected {fx.entries}")
    run_xmlsec1(fx, fx.signed_path)
    run_xmlsec1(fx, fx.tiny_path)
    vmic_t, xmlsec_t = paired(lambda: run_vmic(fx), lambda: run_xmlsec1(fx, fx.signed_path), times)
    start_t = repeat(lambda: run_xmlsec1(fx, fx.tiny_path), times)
    ratio = vmic_t.best / xmlsec_t.best
    print(f"runs per side: {times}, alternating (best / median)")
    print(
        f"vmic verify_list (signature+chain+CRL+model): "
        f"best {vmic_t.best:.3f} s, median {vmic_t.median:.3f} s"
    )
    print(
        f"xmlsec1 --verify (signature+chain, incl. process start): "
        f"best {xmlsec_t.best:.3f} s, median {xmlsec_t.median:.3f} s"
    )
    print(
        f"xmlsec1 process start + tiny doc ({fx.tiny_path.stat().st_size} bytes): "
        f"best {start_t.best:.3f} s, median {start_t.median:.3f} s"
    )
    print(f"ratio vmic/xmlsec1 (best vs best): {ratio:.2f}x")
    print(f"target ratio <= {RATIO_TARGET:g}x: {_verdict(ratio <= RATIO_TARGET)}")
    print(
        f"target vmic < {SECONDS_TARGET:g} s: {_verdict(vmic_t.best < SECONDS_TARGET)} "
        f"(best {vmic_t.best:.3f} s)"
    )


def _hepix_section(fx: Fixture, times: int) -> None:
    listed = len(run_vmic_hepix(fx).image_list.entries)
    if listed != fx.entries:
        raise CountError(f"vmic read {listed} HEPiX images, expected {fx.entries}")
    run_openssl_smime(fx)  # warm up; both must verify
    vmic_t, openssl_t = paired(lambda: run_vmic_hepix(fx), lambda: run_openssl_smime(fx), times)
    ratio = vmic_t.best / openssl_t.best
    print(f"\nHEPiX list (S/MIME JSON, {len(fx.hepix_raw) / MB:.2f} MB, {listed} entries):")
    print(
        f"  vmic verify_list (signature+chain+CRL+model): best {vmic_t.best:.3f} s, "
        f"median {vmic_t.median:.3f} s"
    )
    print(
        f"  openssl smime -verify (signature+chain, incl. process start): "
        f"best {openssl_t.best:.3f} s, median {openssl_t.median:.3f} s"
    )
    print(f"  ratio vmic/openssl (best vs best): {ratio:.2f}x")
    print(f"  target ratio <= {HEPIX_RATIO_TARGET:g}x: {_verdict(ratio <= HEPIX_RATIO_TARGET)}")


if __name__ == "__main__":
    sys.exit(main())
