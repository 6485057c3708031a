"""Certificates and CRLs from outside may be anything (THREATS 33, 37; issue 9, classes 1, 4).

Generated inputs, not hand-picked ones: hypothesis draws structural mutations
of real DER (a tag changed, a field replaced, an extension duplicated, a
child deleted or added, a bit flipped), the test CA re-signs the mutated
``tbsCertificate`` or ``tbsCertList`` so that the mutation reaches every
check behind the signature, and the result goes where vmic meets such bytes:
a list's KeyInfo, a HEPiX list's CMS certificate set, the trust directory.
The only outcomes allowed are a verified list (or chain, or loaded store)
and a vmic error; the rollback state given to the verifier never changes.
`make test` runs a few fixed examples, `make fuzz` many random ones.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import threading
import warnings
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from hypothesis import given
from hypothesis import strategies as st

from feeds.verify import PreviousState, VerifiedList, verify_list
from keys.certs import load_der_certificate
from keys.errors import VmicError
from keys.trust import CrlPolicy, TrustStore
from tests.support import der, hepix, hostile, lists
from tests.support.ca import Identity, TestCA, pem, store, write_trust_dir

pytestmark = pytest.mark.fuzz

ROOT = "/DC=org/DC=vmic-test/CN=Hostile Certificates Root CA"
OTHER_ROOT = "/DC=org/DC=vmic-test/CN=Bystander Root CA"
SIGNER = "/DC=org/DC=vmic-test/OU=Users/CN=Hostile Test Signer"

_any = st.integers(min_value=0, max_value=10**6)
structural = st.tuples(
    _any, st.integers(min_value=0, max_value=der.OPERATIONS - 1), st.binary(max_size=40)
)
"""A tag, length or child changed: mostly DER no parser reads past."""
semantic = st.tuples(
    st.integers(min_value=0, max_value=der.SEMANTIC_KINDS - 1), _any, _any, st.binary(max_size=40)
)
"""Well-formed DER that says something odd: a name's string type, a time, an extension."""
mutations = st.lists(st.one_of(semantic, structural), min_size=1, max_size=3)


def apply(steps: list[der.Step]) -> Callable[[der.Node], None]:
    return lambda tbs: der.apply_all(tbs, steps)


@pytest.fixture(scope="module")
def ca(now: datetime) -> TestCA:
    return TestCA(ROOT, now=now)


@pytest.fixture(scope="module")
def inter(ca: TestCA) -> TestCA:
    return ca.intermediate("/DC=org/DC=vmic-test/CN=Hostile Certificates Intermediate CA")


@pytest.fixture(scope="module")
def signer(ca: TestCA) -> Identity:
    return ca.issue(SIGNER)


@pytest.fixture(scope="module")
def chained(inter: TestCA) -> Identity:
    return inter.issue(SIGNER)


@pytest.fixture(scope="module")
def trust(ca: TestCA, inter: TestCA) -> TrustStore:
    return store([ca, inter])


@pytest.fixture(scope="module")
def atom(signer: Identity, now: datetime) -> bytes:
    return lists.sign(lists.image_list(signer, now=now, version=2), signer)


@pytest.fixture(scope="module")
def atom_chained(chained: Identity, now: datetime) -> bytes:
    return lists.sign(lists.image_list(chained, now=now, version=2), chained)


@pytest.fixture(scope="module")
def smime(signer: Identity, now: datetime) -> bytes:
    return hepix.sign(lists.image_list(signer, now=now, version=2), signer)


def previous(now: datetime) -> PreviousState:
    return PreviousState(version=1, sha256="ab" * 32, updated=now - timedelta(days=7))


def verified_or_refused(raw: bytes, trust: TrustStore, now: datetime) -> VerifiedList | None:
    """Verify ``raw``; any outcome but a VerifiedList or a VmicError fails the test."""
    state = previous(now)
    snapshot = copy.deepcopy(state)
    try:
        return verify_list(raw, trust=trust, pins=None, now=now, previous=state)
    except VmicError:
        return None
    finally:
        assert state == snapshot  # the rollback state given is never touched


@given(raw=st.binary(max_size=600))
def test_any_bytes_as_a_certificate_load_or_raise_a_vmic_error(raw: bytes) -> None:
    with contextlib.suppress(VmicError):
        load_der_certificate(raw, what="test certificate")


@given(steps=mutations)
def test_a_mutated_signer_certificate_in_keyinfo_is_verified_or_refused(
    steps: list[der.Step],
    atom: bytes,
    signer: Identity,
    ca: TestCA,
    trust: TrustStore,
    now: datetime,
) -> None:
    mutated = hostile.resigned(signer, ca, apply(steps))
    verified_or_refused(hostile.with_keyinfo_certificate(atom, mutated), trust, now)


@given(steps=mutations)
def test_a_mutated_intermediate_in_keyinfo_is_verified_or_refused(
    steps: list[der.Step],
    atom_chained: bytes,
    chained: Identity,
    inter: TestCA,
    ca: TestCA,
    now: datetime,
) -> None:
    """The intermediate re-signed by the root: odd CA certificates reach path building."""
    tbs = der.tbs_of(inter.cert.public_bytes(serialization.Encoding.DER))
    der.apply_all(tbs, steps)
    mutated = der.resign(tbs, ca.key)
    only_root = store([ca], crls=[ca.crl(), inter.crl()])
    verified_or_refused(
        hostile.with_keyinfo_certificate(atom_chained, mutated, index=1), only_root, now
    )


@given(steps=mutations)
def test_a_mutated_certificate_in_the_cms_set_is_verified_or_refused(
    steps: list[der.Step],
    smime: bytes,
    signer: Identity,
    ca: TestCA,
    trust: TrustStore,
    now: datetime,
) -> None:
    mutated = hostile.resigned(signer, ca, apply(steps))
    verified_or_refused(hostile.with_cms_certificate(smime, mutated), trust, now)


def test_the_class_of_the_first_report_is_refused_with_a_clear_reason(
    atom: bytes, smime: bytes, signer: Identity, ca: TestCA, trust: TrustStore, now: datetime
) -> None:
    """A certificate cryptography reads only up to its extensions (one twice) used to end a
    sync with DuplicateExtension; now it is a refusal that names the certificate."""
    bad = hostile.resigned(signer, ca, hostile.duplicate_basic_constraints)
    for raw in (
        hostile.with_keyinfo_certificate(atom, bad),
        hostile.with_cms_certificate(smime, bad),
    ):
        with pytest.raises(VmicError, match=r"not a well-formed certificate \(Duplicate"):
            verify_list(raw, trust=trust, pins=None, now=now)
    # The same certificate, untouched but re-signed, still verifies: the helpers are honest.
    same = hostile.resigned(signer, ca, lambda _tbs: None)
    assert verified_or_refused(hostile.with_keyinfo_certificate(atom, same), trust, now)
    assert verified_or_refused(hostile.with_cms_certificate(smime, same), trust, now)


# -- the trust directory ------------------------------------------------------------


@pytest.fixture(scope="module")
def bystander(now: datetime) -> TestCA:
    return TestCA(OTHER_ROOT, now=now)


@pytest.fixture(scope="module")
def bystander_leaf(bystander: TestCA) -> Identity:
    return bystander.issue(SIGNER)


def _directory(tmp: Path, bystander: TestCA, files: dict[str, bytes]) -> TrustStore:
    write_trust_dir(tmp, [bystander])
    for name, data in files.items():
        (tmp / name).write_bytes(data)
    return TrustStore.from_directory(tmp)


@given(steps=mutations, as_pem=st.booleans())
def test_one_mutated_ca_file_never_stops_the_trust_store(
    steps: list[der.Step],
    as_pem: bool,
    ca: TestCA,
    signer: Identity,
    bystander: TestCA,
    bystander_leaf: Identity,
    tmp_path_factory: pytest.TempPathFactory,
    now: datetime,
) -> None:
    """The CA re-signs its own mutated certificate; the rest of the directory still works."""
    tbs = der.tbs_of(ca.cert.public_bytes(serialization.Encoding.DER))
    der.apply_all(tbs, steps)
    mutated = der.resign(tbs, ca.key)
    data = pem_block("CERTIFICATE", mutated) if as_pem else mutated
    trust = _directory(
        tmp_path_factory.mktemp("trust"), bystander, {"1badca00.0": data, "1badca00.r0": crl(ca)}
    )
    assert trust.validate(bystander_leaf.cert, [], at=now).anchor == bystander.cert
    with contextlib.suppress(VmicError):
        trust.validate(signer.cert, [], at=now, crl=CrlPolicy.REQUIRE)


@given(steps=mutations, with_good_crl=st.booleans())
def test_a_mutated_crl_never_stops_the_trust_store(
    steps: list[der.Step],
    with_good_crl: bool,
    ca: TestCA,
    signer: Identity,
    bystander: TestCA,
    bystander_leaf: Identity,
    tmp_path_factory: pytest.TempPathFactory,
    now: datetime,
) -> None:
    tbs = der.tbs_of(ca.crl().public_bytes(serialization.Encoding.DER))
    der.apply_all(tbs, steps)
    files = {
        "1badca00.0": pem(ca.cert),
        "1badca00.r1": pem_block("X509 CRL", der.resign(tbs, ca.key)),
    }
    if with_good_crl:
        files["1badca00.r0"] = crl(ca)
    trust = _directory(tmp_path_factory.mktemp("trust"), bystander, files)
    assert trust.validate(bystander_leaf.cert, [], at=now).anchor == bystander.cert
    for policy in CrlPolicy:
        with contextlib.suppress(VmicError):
            trust.validate(signer.cert, [], at=now, crl=policy)


@given(data=st.binary(max_size=300), name=st.sampled_from(["0badf11e.0", "0badf11e.r0", "x.pem"]))
def test_any_bytes_in_a_trust_file_are_loaded_or_reported(
    data: bytes,
    name: str,
    bystander: TestCA,
    bystander_leaf: Identity,
    tmp_path_factory: pytest.TempPathFactory,
    now: datetime,
) -> None:
    trust = _directory(tmp_path_factory.mktemp("trust"), bystander, {name: data})
    assert trust.validate(bystander_leaf.cert, [], at=now).anchor == bystander.cert


def crl(ca: TestCA) -> bytes:
    return ca.crl().public_bytes(serialization.Encoding.PEM)


def pem_block(label: str, data: bytes) -> bytes:
    body = base64.encodebytes(data)
    return f"-----BEGIN {label}-----\n".encode() + body + f"-----END {label}-----\n".encode()


def _negative_serial(tbs: der.Node) -> None:
    """serialNumber -1: parsed by cryptography with a warning (RFC 5280 wants it positive)."""
    assert tbs.children is not None
    (serial,) = [c for c in tbs.children if c.tag == b"\x02"][:1]
    serial.content = b"\xff"


def test_a_warning_about_a_ca_certificate_is_noted_even_while_other_threads_warn(
    tmp_path: Path, now: datetime
) -> None:
    """The library's warning on a trust-directory CA is kept as a note naming the file; a
    warning another thread raises meanwhile is not put on it."""
    ca = TestCA("/DC=org/DC=vmic-test/CN=Odd Serial CA", now=now)
    tbs = der.tbs_of(ca.cert.public_bytes(serialization.Encoding.DER))
    _negative_serial(tbs)
    body = base64.encodebytes(der.resign(tbs, ca.key)).decode("ascii")
    (tmp_path / "0dd00000.0").write_text(
        f"-----BEGIN CERTIFICATE-----\n{body}-----END CERTIFICATE-----\n"
    )
    stop = threading.Event()

    def chatter() -> None:
        while not stop.is_set():
            with contextlib.suppress(UserWarning):  # an error outside the reader's window
                warnings.warn("said by another thread", UserWarning, stacklevel=1)

    thread = threading.Thread(target=chatter)
    thread.start()
    try:
        trusts = [TrustStore.from_directory(tmp_path) for _ in range(100)]
    finally:
        stop.set()
        thread.join(5)

    for trust in trusts:
        assert len(trust.notes) == 1, trust.notes
        assert trust.notes[0].startswith("0dd00000.0: ")
        assert "serial" in trust.notes[0].lower()
        assert "another thread" not in trust.notes[0]
