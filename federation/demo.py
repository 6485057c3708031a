"""`make demo`: an endorser publishes a signed image list; a site subscribes and keeps up.

Runs the real `vmic` commands in-process, in a scratch folder (``demo-out/``
unless ``--dir`` says otherwise), with a small web server on 127.0.0.1
standing in for the endorser's web site, and tells what each step does:
a development CA and an endorser certificate; two small generated images; a
manifest and a signed list, verified by vmic and by xmlsec1 when present;
two lists a site must refuse; then a site that is initialised, subscribes,
syncs, approves, syncs again and shows its images; and finally the endorser
revokes an image and the next sync withdraws it; a second site follows the
first (a peer) and gets the image from it, checked against the endorser's
signed SHA-512.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import shlex
import shutil
import subprocess
import sys
import tarfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from federation.cli import main as vmic
from site_agent.home import SiteHome
from site_agent.store import Store

MARKER = ".vmic-demo"
CA_DN = "/DC=org/DC=vmic-demo/CN=vmic Demo CA"
ENDORSER_DN = "/DC=org/DC=vmic-demo/OU=Endorsers/CN=Jane Endorser"
OTHER_DN = "/DC=org/DC=vmic-demo/OU=Endorsers/CN=Joe Endorser"
SITE_A_DN = "/DC=org/DC=vmic-demo/OU=Sites/CN=site-a.example.org"


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base's name
        """The demo's output is the commands; the server keeps quiet."""


@contextmanager
def web_server(folder: Path) -> Iterator[str]:
    """Serve ``folder`` on 127.0.0.1 (a free port) while the block runs."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_QuietHandler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def _step(number: int, text: str) -> None:
    print(f"\n== {number}. {text}")


def _run(*args: str, expect: int = 0) -> int:
    print("$ vmic " + " ".join(shlex.quote(a) for a in args))
    sys.stdout.flush()
    code = vmic(list(args))
    sys.stdout.flush()
    sys.stderr.flush()
    if code != expect:
        print(f"demo: `vmic {args[0]}` exited with {code}, expected {expect}", file=sys.stderr)
        raise SystemExit(1)
    return code


_PASSWD = b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/nonexistent:/sbin/nologin\n"
_SHADOW = b"root:*:19000:0:99999:7:::\nnobody:!:19000:0:99999:7:::\n"


def _image(path: Path, pretty_name: str, size: int, extra: dict[str, bytes] | None = None) -> None:
    """A tiny root file system as a tar archive (gzip or xz by the name), deterministic."""
    blocks: list[bytes] = []
    block = hashlib.sha512(path.name.encode()).digest()
    while len(blocks) * len(block) < size:  # a chain of digests: bytes that do not compress
        blocks.append(block)
        block = hashlib.sha512(block).digest()
    files = {
        "etc/os-release": f'PRETTY_NAME="{pretty_name}"\n'.encode(),
        "etc/passwd": _PASSWD,
        "etc/shadow": _SHADOW,
        "etc/machine-id": b"",
        "usr/share/demo/payload.bin": b"".join(blocks)[:size],
        **(extra or {}),
    }
    mode = "w:xz" if path.name.endswith(".xz") else "w:gz"
    with tarfile.open(path, mode) as archive:  # type: ignore[call-overload]
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 1_767_225_600, 0o644
            archive.addfile(info, io.BytesIO(data))


def _prepare(folder: Path) -> None:
    if folder.exists():
        if not (folder / MARKER).exists():
            print(f"demo: {folder} exists but was not made by the demo; use --dir", file=sys.stderr)
            raise SystemExit(1)
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    (folder / MARKER).write_text("made by `make demo`; safe to delete\n")


def _image_ids(home: Path) -> list[str]:
    with Store.open(SiteHome(home).database) as store:
        return [image.image_id for image in store.images()]


def endorse(folder: Path, base_url: str) -> None:
    ca, jane, joe = folder / "ca", folder / "jane", folder / "joe"
    www = folder / "www"
    manifest = folder / "list.toml"

    _step(1, "A development CA (real endorsers use their grid CA instead)")
    _run("keys", "ca", "--subject", CA_DN, "--out", str(ca), "--key-type", "ec")

    _step(2, "An endorser certificate from that CA, and a second endorser")
    _run(
        "keys",
        "issue",
        "--ca",
        str(ca),
        "--subject",
        ENDORSER_DN,
        "--email",
        "jane@example.org",
        "--out",
        str(jane),
        "--key-type",
        "ec",
    )
    _run(
        "keys",
        "issue",
        "--ca",
        str(ca),
        "--subject",
        OTHER_DN,
        "--out",
        str(joe),
        "--key-type",
        "ec",
    )
    _run("keys", "show", str(jane / "cert.pem"))

    _step(3, f"Two small images, published on the endorser's web server ({base_url})")
    _image(www / "tiny-alma9.tar.gz", "AlmaLinux 9.4 (Seafoam Ocelot)", 64 * 1024)
    _image(www / "tiny-debian12.tar.xz", "Debian GNU/Linux 12 (bookworm)", 96 * 1024)
    for image in sorted(www.iterdir()):
        print(f"wrote {image.name} ({image.stat().st_size} bytes)")
    leaky = folder / "leaky.tar.gz"
    _image(
        leaky,
        "Leaky Linux 1",
        1024,
        {"root/.ssh/authorized_keys": b"ssh-ed25519 AAAAC3Nza builder@laptop\n"},
    )

    _step(4, "Images pass the trusted-image policy check, then are hashed (SHA-512)")
    _run("policy", "check", str(leaky), expect=17)
    _run(
        "endorse",
        "init",
        str(manifest),
        "--title",
        "vmic demo images",
        "--self-url",
        f"{base_url}/demo.atom",
        "--author",
        "Jane Endorser",
        "--email",
        "jane@example.org",
        "--vo",
        "dteam",
    )
    _run(
        "endorse",
        "add",
        str(manifest),
        str(www / "tiny-alma9.tar.gz"),
        "--url",
        f"{base_url}/tiny-alma9.tar.gz",
        "--title",
        "Tiny AlmaLinux 9",
        "--os",
        "Linux",
        "--osname",
        "AlmaLinux",
        "--osversion",
        "9.4",
        "--arch",
        "x86_64",
        "--hypervisor",
        "KVM",
        "--vo",
        "dteam",
    )
    _run(
        "endorse",
        "add",
        str(manifest),
        str(www / "tiny-debian12.tar.xz"),
        "--url",
        f"{base_url}/tiny-debian12.tar.xz",
        "--title",
        "Tiny Debian 12",
        "--os",
        "Linux",
        "--osname",
        "Debian",
        "--osversion",
        "12",
        "--arch",
        "x86_64",
        "--hypervisor",
        "KVM",
    )
    _run("endorse", "show", str(manifest))

    _step(5, "Sign the list (checked against the trust directory before it is written)")
    _sign(folder)

    signed = www / "demo.atom"
    _step(6, "Verify it as a site does, pinned to Jane's subject and issuer DNs")
    pin = ["--endorser-dn", ENDORSER_DN, "--ca-dn", CA_DN]
    _run("verify", str(signed), "--trust", str(ca), *pin)

    xmlsec1 = shutil.which("xmlsec1")
    if xmlsec1:
        _step(7, "An independent XML-DSig implementation agrees (xmlsec1)")
        command = [
            xmlsec1,
            "--verify",
            "--trusted-pem",
            str(ca / "ca.pem"),
            "--enabled-reference-uris",
            "empty",
            str(signed),
        ]
        print("$ " + " ".join(shlex.quote(c) for c in command))
        # A fixed argument list of our own paths, no shell.
        result = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603
        print((result.stdout + result.stderr).strip())
        if result.returncode != 0:
            print("demo: xmlsec1 did not verify the list", file=sys.stderr)
            raise SystemExit(1)
    else:
        _step(7, "xmlsec1 is not installed; skipping the independent check")

    _step(8, "A site refuses a tampered copy (one letter of a title changed)")
    tampered = folder / "tampered.atom"
    tampered.write_bytes(signed.read_bytes().replace(b"Tiny Debian 12", b"Tiny Debian 13"))
    _run("verify", str(tampered), "--trust", str(ca), *pin, expect=5)

    _step(9, "A site that pinned another endorser refuses Jane's genuine list")
    _run(
        "verify",
        str(signed),
        "--trust",
        str(ca),
        "--endorser-dn",
        OTHER_DN,
        "--ca-dn",
        CA_DN,
        expect=8,
    )


def _sign(folder: Path) -> None:
    _run(
        "endorse",
        "sign",
        str(folder / "list.toml"),
        "--cert",
        str(folder / "jane/cert.pem"),
        "--key",
        str(folder / "jane/key.pem"),
        "--trust",
        str(folder / "ca"),
        "--valid-for",
        "28d",
        "--out",
        str(folder / "www" / "demo.atom"),
        "--hepix-out",
        str(folder / "www" / "demo.smime"),
    )


def site(folder: Path, base_url: str) -> None:
    home, trust = folder / "site", folder / "site-trust"
    trust.mkdir()
    for name in ("ca.pem", "ca.crl.pem"):  # a site installs the CA and its CRL, never the key
        shutil.copy(folder / "ca" / name, trust / name)
    h = ["--home", str(home)]

    _step(10, "A site home: config, database, cache (the site trusts the demo CA)")
    _run("site", "init", *h, "--trust", str(trust))

    _step(11, "Subscribe: the list is fetched and verified before it is accepted")
    _run(
        "subscribe",
        *h,
        f"{base_url}/demo.atom",
        "--name",
        "demo",
        "--endorser-dn",
        ENDORSER_DN,
        "--ca-dn",
        CA_DN,
    )

    _step(12, "The cron job; silent when all is well. New images wait for the admin")
    _run("sync", *h)
    _run("images", *h)

    _step(13, "Approve both images; the next sync downloads and checks them")
    ids = _image_ids(home)
    _run("approve", *h, *ids)
    _run("sync", *h, "-v")
    _run("images", *h)

    _step(14, "The endorser revokes an image and re-signs; the next sync withdraws it")
    with_debian = next(i for i in ids if _title(home, i) == "Tiny Debian 12")
    _run(
        "endorse",
        "revoke",
        str(folder / "list.toml"),
        with_debian,
        "--reason",
        "demo: sshd host keys were left in the image",
    )
    _sign(folder)
    _run("sync", *h, "-v")
    _run("images", *h)
    _run("history", *h)


def _title(home: Path, image_id: str) -> str:
    with Store.open(SiteHome(home).database) as store:
        image = store.image(image_id)
        return image.title if image else ""


@contextmanager
def vmic_serve(home: Path) -> Iterator[str]:
    """`vmic serve` for a site home, as its own process, on a free port of 127.0.0.1."""
    command = [
        sys.executable,
        "-m",
        "federation",
        "serve",
        "--home",
        str(home),
        "--bind",
        "127.0.0.1:0",
    ]
    # A fixed argument list of our own paths, no shell.
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as server:  # noqa: S603
        try:
            line = server.stdout.readline() if server.stdout else ""  # "listening on URL ..."
            if "listening on " not in line:
                raise SystemExit(f"demo: vmic serve did not start: {line.strip()}")
            yield line.split("listening on ", 1)[1].split()[0]
        finally:
            server.terminate()
            server.wait(timeout=30)


def federation(folder: Path) -> None:
    home_a, home_b = folder / "site", folder / "site-b"
    site_a = folder / "site-a-id"
    _step(15, "Site A gets a certificate of its own and serves its images (vmic serve)")
    _run(
        "keys",
        "issue",
        "--ca",
        str(folder / "ca"),
        "--subject",
        SITE_A_DN,
        "--out",
        str(site_a),
        "--key-type",
        "ec",
    )
    with vmic_serve(home_a) as url_a:
        print(f"site A serves {url_a}/ (catalogue), {url_a}/export.atom, {url_a}/images/...")
        _run(
            "site",
            "identity",
            "--home",
            str(home_a),
            "--cert",
            str(site_a / "cert.pem"),
            "--key",
            str(site_a / "key.pem"),
            "--base-url",
            url_a,
        )
        _run("export", "--home", str(home_a))

        _step(16, "Site B follows site A, and subscribes to the same endorser's list")
        trust_b = folder / "site-trust"
        h = ["--home", str(home_b)]
        _run("site", "init", *h, "--trust", str(trust_b))
        _run(
            "peer",
            "add",
            *h,
            f"{url_a}/export.atom",
            "--name",
            "site-a",
            "--site-dn",
            SITE_A_DN,
            "--ca-dn",
            CA_DN,
        )
        list_url = _subscription_url(home_a)
        _run(
            "subscribe",
            *h,
            list_url,
            "--name",
            "demo",
            "--auto-approve",
            "--endorser-dn",
            ENDORSER_DN,
            "--ca-dn",
            CA_DN,
        )

        _step(17, "Site B syncs: the image comes from site A, checked against Jane's SHA-512")
        _run("sync", *h, "-v")
        _run("images", *h)
        _run("peers", *h)


def hepix(folder: Path, base_url: str) -> None:
    """The same list for vmcatcher sites: HEPiX JSON signed as S/MIME."""
    home = folder / "site-hepix"
    h = ["--home", str(home)]
    _step(18, "For vmcatcher sites, each signing also wrote the list as HEPiX (S/MIME JSON)")
    _run("verify", str(folder / "www" / "demo.smime"), "--trust", str(folder / "ca"))
    _step(19, "A site subscribes to the HEPiX copy exactly as to the Atom list")
    _run("site", "init", *h, "--trust", str(folder / "site-trust"))
    _run(
        "subscribe",
        *h,
        f"{base_url}/demo.smime",
        "--name",
        "demo-hepix",
        "--auto-approve",
        "--endorser-dn",
        ENDORSER_DN,
        "--ca-dn",
        CA_DN,
    )
    _run("sync", *h, "-v")
    _run("images", *h)


def _subscription_url(home: Path) -> str:
    with Store.open(SiteHome(home).database) as store:
        return store.subscriptions()[0].url


def demo(folder: Path) -> int:
    _prepare(folder)
    print(f"vmic demo in {folder}/ : an endorser signs an image list; a site subscribes to it.")
    www = folder / "www"
    www.mkdir()
    with web_server(www) as base_url:
        endorse(folder, base_url)
        site(folder, base_url)
        federation(folder)
        hepix(folder, base_url)
    print(f"\nDone. Everything is in {folder}/ (the site home is {folder}/site).")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--dir", type=Path, default=Path("demo-out"), help="scratch folder")
    return demo(parser.parse_args(argv).dir.resolve())


if __name__ == "__main__":
    sys.exit(main())
