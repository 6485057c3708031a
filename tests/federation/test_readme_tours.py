"""The README's tours run as written: every command of the endorser's and the site admin's
tour, taken from README.md itself, run as a new user would type it.

Only what cannot be real on a test machine is replaced, and each replacement
is listed in :attr:`Tour.places`: the endorser's web host becomes the tour's own
`vmic serve` on a loopback port, the grid trust directory becomes the tour's
development CA, the site home is given by ``VMIC_HOME`` (as the README says a
site may), the example hook program becomes a script that notes each event,
and the placeholders (IMAGE_ID, the example UUID, ``...``) become the image
the tour endorsed. The image itself is a real qcow2 disk holding an
ext4 file system that passes the trusted-image policy check.

Each command runs in its own process (``python -m federation``, the same entry
point as the console script), in the tour's working folder. The story: the
endorser makes keys, a list, an image, signs, serves and verifies; the site
initialises, subscribes, looks, approves and refuses, adds a hook and syncs
from cron; the endorser revokes the image; the next cron run withdraws it.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from federation.cli.reference import README
from tests.feeds.test_policy import clean_tree
from tests.support.images import write_ext4

ENDORSER_TOUR = "A five-minute tour for an endorser"
SITE_TOUR = "A site admin's tour"
EXAMPLE_UUID = "3d1f5c0a-2b6e-4c1d-9f3a-5e7b8c9d0e1f"


def section(title: str) -> str:
    text = README.read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end]


def blocks(title: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", section(title), flags=re.DOTALL)


def commands(block: str) -> list[list[str]]:
    """Each command of a shell block: continuation lines joined, comments dropped."""
    joined = block.replace("\\\n", " ")
    return [words for line in joined.splitlines() if (words := shlex.split(line, comments=True))]


@dataclass
class Tour:
    work: Path
    home: Path
    port: int
    image_id: str = ""

    @property
    def places(self) -> dict[str, str]:
        return {
            "https://images.example.org": f"http://127.0.0.1:{self.port}",
            "0.0.0.0:8080": f"127.0.0.1:{self.port}",
            "/etc/grid-security/certificates": str(self.work / "ca"),
            "/srv/images": str(self.work),
            "/var/lib/vmic": str(self.home),
            "/usr/local/bin/vmic-one": str(self.work / "vmic-one"),
            "IMAGE_ID": self.image_id,
            EXAMPLE_UUID: self.image_id,
        }

    def fill(self, words: list[str]) -> list[str]:
        filled = []
        for word in words:
            if word == "...":  # "and more ids like it"
                continue
            text = word
            for placeholder, value in self.places.items():
                text = text.replace(placeholder, value)
            filled.append(text)
        return filled

    def argv(self, words: list[str]) -> list[str]:
        assert words[0] == "vmic", words
        return [sys.executable, "-m", "federation", *self.fill(words)[1:]]

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "VMIC_HOME": str(self.home)}

    def run(self, words: list[str]) -> str:
        done = subprocess.run(
            self.argv(words),
            cwd=self.work,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0, f"{shlex.join(words)}\n{done.stdout}\n{done.stderr}"
        return done.stdout

    def run_block(self, block: str) -> list[str]:
        return [self.run(words) for words in commands(block)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serving(tour: Tour, words: list[str]) -> Iterator[None]:
    """The tour's `vmic serve` command, in the background until the block ends."""
    process = subprocess.Popen(
        tour.argv(words),
        cwd=tour.work,
        env=tour.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert "listening on" in line, line + process.stdout.read()
        yield
    finally:
        process.terminate()
        process.wait(timeout=30)
        if process.stdout is not None:
            process.stdout.close()


def qcow2_image(work: Path) -> Path:
    """What the tour calls alma9-wn.qcow2: a qcow2 disk, an ext4 file system inside, clean."""
    tool = shutil.which("qemu-img")
    if tool is None:
        if os.environ.get("VMIC_REQUIRE_INTEROP") == "1":
            pytest.fail("qemu-img is required under `make test` (Debian qemu-utils)")
        pytest.skip("qemu-img is not installed")
    raw = write_ext4(clean_tree(), work / "alma9-wn.raw", work / "build")
    image = work / "alma9-wn.qcow2"
    subprocess.run([tool, "convert", "-O", "qcow2", str(raw), str(image)], check=True, timeout=60)
    raw.unlink()
    shutil.rmtree(work / "build")
    return image


def test_the_endorser_and_site_admin_tours_run_as_written(tmp_path: Path) -> None:
    work = tmp_path / "tour"
    work.mkdir()
    tour = Tour(work=work, home=tmp_path / "site", port=free_port())
    qcow2_image(work)
    hook = work / "vmic-one"  # the README's example hook program: here it notes each event
    hook.write_text('#!/bin/sh\necho "$VMIC_EVENT $VMIC_IMAGE_ID $*" >> "$0.log"\n')
    hook.chmod(0o755)
    keys, init, add, sign, serve, verify, revoke = blocks(ENDORSER_TOUR, "sh")
    site_init, subscribe, hooks = blocks(SITE_TOUR, "sh")
    (cron,) = blocks(SITE_TOUR, "cron")

    # -- the endorser ------------------------------------------------------------------
    shown = tour.run_block(keys)[-1]
    assert "/DC=org/DC=example/OU=Users/CN=Jane Endorser" in shown
    tour.run_block(init)
    added, listed = tour.run_block(add)
    tour.image_id = re.findall(
        r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}", added
    )[0]
    assert tour.image_id in listed
    tour.run_block(sign)
    (serve_command,) = commands(serve)
    with serving(tour, serve_command):
        (verified,) = tour.run_block(verify)
        assert "version 1 is trusted" in verified

        # -- the site admin ------------------------------------------------------------
        tour.run_block(site_init)
        subscribed, images, shown_image, approved, refused = tour.run_block(subscribe)
        assert "version 1" in subscribed
        assert tour.image_id in images
        assert "AlmaLinux 9 worker node" in shown_image
        assert "approved" in approved
        assert "refused" in refused
        tour.run_block(hooks)
        (cron_line,) = [line for line in cron.splitlines() if line.strip()]
        sync = cron_line.split()[5:]  # after the five time fields
        tour.run(sync)

        # -- the endorser takes the image back; the next cron run withdraws it ---------
        tour.run_block(revoke)
        tour.run(sync)
    states = tour.run(["vmic", "images", "--json"])
    assert '"state": "revoked"' in states
    events = (work / "vmic-one.log").read_text().splitlines()
    assert f"image.withdrawn {tour.image_id} --datastore images" in events
