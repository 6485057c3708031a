"""atrope, the EGI image-list consumer, takes the HEPiX lists vmic writes.

Real atrope 2.0.0 (in its own venv, which `make test` installs from
``tests/interop/atrope/constraints.txt``; ``VMIC_ATROPE`` names its executable),
running the real ``openssl smime -verify`` against a hashed CA directory, reads
lists that vmic's own code rendered (``render_hepix``) and signed
(``sign_smime``), served with the image bytes by the loopback simulator. Each
test has its own atrope configuration, state and cache. atrope's exit code says
little (it refuses many things and still exits 0), so the tests read what it
printed, what it logged and what it left in its cache.

Outside `make test` the tests skip when atrope or openssl is missing; with
``VMIC_REQUIRE_INTEROP=1`` (which `make test` sets) they fail instead.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import yaml

from feeds.hepix import render_hepix
from feeds.model import ImageList, Tombstone, image_id
from tests.sim.server import Simulator
from tests.support.ca import Identity, TestCA, pem
from tests.support.hepix import sign
from tests.support.lists import entry, image_list, image_uuid
from tests.support.site import image_bytes

LIST_NAME = "vmic-test"
LIST_PATH = "/lists/base.hepix"
TIMEOUT = 120
"""Seconds for one atrope command (atrope sets no timeout on fetching a list)."""

_LOG_LINE = re.compile(r"^\S+ \S+ \d+ (?P<level>[A-Z]+) (?P<logger>\S+) ")
_ROW = re.compile(r"^\|\s*(?P<key>[^|]*?)\s*\|\s*(?P<value>.*?)\s*\|$")


def _cache_home() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")


def _missing(what: str) -> None:
    """Skip, or fail under `make test` (``VMIC_REQUIRE_INTEROP=1``)."""
    message = f"{what}; `make test` installs it"
    if os.environ.get("VMIC_REQUIRE_INTEROP") == "1":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def atrope_command() -> Path:
    """The atrope executable (``VMIC_ATROPE``, else the venv `make test` makes)."""
    default = _cache_home() / "vmic-test-atrope" / "venv" / "bin" / "atrope"
    command = Path(os.environ.get("VMIC_ATROPE") or default)
    if not os.access(command, os.X_OK):
        _missing(f"atrope is not installed at {command}")
    if shutil.which("openssl") is None:
        _missing("the openssl command (which atrope runs to verify S/MIME) is not installed")
    return command


@dataclass(frozen=True, slots=True)
class Run:
    """One atrope command: its exit code, stdout and log (stderr)."""

    returncode: int
    stdout: str
    log: str

    def lines(self, *needles: str) -> list[str]:
        return [line for line in self.log.splitlines() if all(n in line for n in needles)]

    def errors(self) -> list[str]:
        """Log records at ERROR or CRITICAL, and any traceback."""
        found = []
        for line in self.log.splitlines():
            match = _LOG_LINE.match(line)
            if (match and match["level"] in {"ERROR", "CRITICAL"}) or "Traceback" in line:
                found.append(line)
        return found

    def table(self) -> dict[str, str]:
        """The Property/Value table ``imagelist-fetch`` prints for a list."""
        rows = (_ROW.match(line) for line in self.stdout.splitlines())
        return {row["key"]: row["value"] for row in rows if row and row["key"]}

    def __str__(self) -> str:
        return f"atrope exited {self.returncode}\n--- stdout\n{self.stdout}\n--- log\n{self.log}"


@dataclass
class Atrope:
    """A site running atrope with one HEPiX source: the signer's root CA is all it trusts."""

    command: Path
    root: Path
    sim: Simulator

    @property
    def images(self) -> Path:
        return self.root / "cache" / LIST_NAME / "images"

    def configure(self, ca: TestCA, endorser: Identity) -> None:
        """Trust ``ca`` (hashed for ``openssl -CApath``) and subscribe to the list."""
        capath = self.root / "capath"
        capath.mkdir(parents=True)
        root_pem = self.root / "root.pem"
        root_pem.write_bytes(pem(ca.cert))
        (capath / f"{_subject_hash(root_pem)}.0").write_bytes(pem(ca.cert))
        (self.root / "state").mkdir()
        (self.root / "cache").mkdir()
        sources = {
            LIST_NAME: {
                "url": self.sim.url(LIST_PATH),
                "enabled": True,
                "endorser": {"dn": endorser.subject.slash(), "ca": endorser.issuer.slash()},
                "images": [],
                "prefix": "VMIC ",
            }
        }
        (self.root / "hepix.yaml").write_text(yaml.safe_dump(sources))
        (self.root / "atrope.conf").write_text(
            "[DEFAULT]\n"
            f"state_path = {self.root / 'state'}\n"
            f"ca_path = {capath}\n"
            f"download_ca_file = {self.root / 'state' / 'atrope-ca-bundle.pem'}\n"
            "debug = true\n"
            "use_stderr = true\n"
            "\n[cache]\n"
            f"path = {self.root / 'cache'}\n"
            "\n[sources]\n"
            f"hepix_sources = {self.root / 'hepix.yaml'}\n"
            "\n[dispatchers]\n"
            "dispatcher = noop\n"
        )

    def run(self, *args: str) -> Run:
        # requests honours proxy variables: the loopback server must be reached directly
        env = {**os.environ, "no_proxy": "127.0.0.1", "NO_PROXY": "127.0.0.1"}
        done = subprocess.run(
            [str(self.command), "--config-file", str(self.root / "atrope.conf"), *args],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
            env=env,
            cwd=self.root,
        )
        return Run(done.returncode, done.stdout, done.stderr)

    def cached(self) -> dict[str, bytes]:
        """The image files in atrope's cache for the list, by name."""
        if not self.images.is_dir():
            return {}
        return {path.name: path.read_bytes() for path in self.images.iterdir()}


def _subject_hash(cert: Path) -> str:
    done = subprocess.run(
        ["openssl", "x509", "-hash", "-noout", "-in", str(cert)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout.strip()


@pytest.fixture
def atrope(atrope_command: Path, tmp_path: Path, sim: Simulator) -> Atrope:
    return Atrope(command=atrope_command, root=tmp_path / "atrope", sim=sim)


@pytest.fixture(scope="module")
def intermediate(root_ca: TestCA) -> TestCA:
    return root_ca.intermediate("/DC=org/DC=vmic-test/CN=vmic Test Intermediate CA")


def _publish_list(
    sim: Simulator,
    signer: Identity,
    now: datetime,
    *,
    images: tuple[int, ...],
    revoked: tuple[int, ...] = (),
    version: int = 1,
) -> tuple[ImageList, dict[str, bytes], bytes]:
    """The list of ``images`` (bytes served too), signed as `vmic endorse sign --format hepix`,
    and served: the list, the live images' bytes by id, the signed message."""
    served = {}
    entries = []
    for n in (*images, *revoked):
        data = image_bytes(n)
        sim.publish(f"/images/img-{n}.raw", data)
        if n in images:
            url = sim.url(f"/images/img-{n}.raw")
            entries.append(entry(n, now=now, data=data, url=url, format="raw"))
            served[image_uuid(n)] = data
    lst = replace(
        image_list(
            signer,
            now=now,
            entries=0,
            version=version,
            self_url=sim.url(LIST_PATH),
            tombstones=tuple(
                Tombstone(id=image_id(image_uuid(n)), when=now - timedelta(minutes=1), reason="bad")
                for n in revoked
            ),
        ),
        entries=tuple(entries),
    )
    signed = sign(lst, signer)
    sim.publish(LIST_PATH, signed)
    return lst, served, signed


def _assert_fetched(run: Run, images: dict[str, bytes]) -> None:
    table = run.table()
    assert (table.get("verified"), table.get("trusted"), table.get("expired")) == (
        "True",
        "True",
        "False",
    ), run
    assert all(uuid in table.get("images", "") for uuid in images), run
    assert run.errors() == [], run
    assert run.returncode == 0, run


def _assert_dispatched(atrope: Atrope, run: Run, images: dict[str, bytes]) -> None:
    """Exactly ``images`` in the cache, each checked and handed to the noop dispatcher."""
    assert run.errors() == [], run
    assert run.returncode == 0, run
    cached = atrope.cached()
    assert sorted(cached) == sorted(images), run
    for uuid, data in images.items():
        assert hashlib.sha512(cached[uuid]).digest() == hashlib.sha512(data).digest()
        assert run.lines(f"Image '{uuid}' present in", "checksum OK"), run
    assert len(run.lines("Dispatching image (noop) <")) == len(images), run


def test_atrope_dispatches_an_image_from_a_vmic_hepix_list(
    atrope: Atrope, sim: Simulator, root_ca: TestCA, endorser: Identity, now: datetime
) -> None:
    atrope.configure(root_ca, endorser)
    _, images, _ = _publish_list(sim, endorser, now, images=(1,))

    _assert_fetched(atrope.run("imagelist-fetch"), images)
    _assert_dispatched(atrope, atrope.run("dispatch"), images)


def test_atrope_takes_a_list_whose_endorser_an_intermediate_ca_certified(
    atrope: Atrope,
    sim: Simulator,
    root_ca: TestCA,
    intermediate: TestCA,
    endorser: Identity,
    now: datetime,
) -> None:
    signer = intermediate.issue(endorser.subject.slash())
    assert signer.intermediates == [intermediate.cert]  # sent in the message; only the root trusted
    atrope.configure(root_ca, signer)
    lst, images, _ = _publish_list(sim, signer, now, images=(1,))
    assert lst.issuer_dn.slash() == "/DC=org/DC=vmic-test/CN=vmic Test Intermediate CA"

    _assert_fetched(atrope.run("imagelist-fetch"), images)
    _assert_dispatched(atrope, atrope.run("dispatch"), images)


def test_atrope_keeps_the_live_images_and_drops_the_one_vmic_revoked(
    atrope: Atrope, sim: Simulator, root_ca: TestCA, endorser: Identity, now: datetime
) -> None:
    atrope.configure(root_ca, endorser)
    _, before, _ = _publish_list(sim, endorser, now, images=(1, 2, 3, 4))
    _assert_dispatched(atrope, atrope.run("dispatch"), before)

    lst, live, _ = _publish_list(sim, endorser, now, images=(1, 2, 3), revoked=(4,), version=2)
    revoked = image_uuid(4)
    assert revoked not in render_hepix(lst).decode()  # HEPiX has no revocations: left out
    run = atrope.run("dispatch")

    _assert_dispatched(atrope, run, live)
    assert run.lines("Removing", f"{revoked}' from cache directory"), run
    assert len(sim.requests_for("/images/img-4.raw")) == 1  # by the first run only


def test_atrope_refuses_a_vmic_hepix_list_changed_after_signing(
    atrope: Atrope, sim: Simulator, root_ca: TestCA, endorser: Identity, now: datetime
) -> None:
    atrope.configure(root_ca, endorser)
    _, _, signed = _publish_list(sim, endorser, now, images=(1,))
    title = b'"dc:title": "Test image 1"'
    assert signed.count(title) == 1
    # one byte of the signed JSON: the list stays well-formed, only its signature fails
    sim.publish(LIST_PATH, signed.replace(title, b'"dc:title": "Test image 7"'))

    run = atrope.run("dispatch")

    assert atrope.cached() == {}, run
    assert run.lines("Dispatching image (noop)") == [], run
    assert run.lines("checksum OK") == [], run
    assert sim.requests_for("/images/img-1.raw") == [], run
    assert sim.requests_for(LIST_PATH), run  # atrope did fetch the list
    # and refused it for its signature: atrope 2.0.0 turns only openssl's exit status 2 into
    # a refusal; status 4 (the signature does not verify) ends the whole run with a
    # traceback, before any list is synced (an atrope bug: one bad list stops the others)
    assert run.lines("CalledProcessError", "'openssl' returned non-zero exit status 4"), run
