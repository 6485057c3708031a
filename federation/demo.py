"""`make demo`: an endorser's first list, from nothing to a verified signature.

Runs the real `vmic` commands in-process, in a scratch folder (``demo-out/``
unless ``--dir`` says otherwise), and tells what each step does: a
development CA and an endorser certificate, two small generated image files,
a manifest, a signed list, its verification (and by xmlsec1 when present),
and two lists a site must refuse: a tampered copy and a list checked against
another endorser's pin.
"""

from __future__ import annotations

import argparse
import hashlib
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from federation.cli import main as vmic

MARKER = ".vmic-demo"
CA_DN = "/DC=org/DC=vmic-demo/CN=vmic Demo CA"
ENDORSER_DN = "/DC=org/DC=vmic-demo/OU=Endorsers/CN=Jane Endorser"
OTHER_DN = "/DC=org/DC=vmic-demo/OU=Endorsers/CN=Joe Endorser"


def _step(number: int, text: str) -> None:
    print(f"\n== {number}. {text}")


def _run(*args: str, expect: int = 0) -> int:
    print("$ vmic " + " ".join(shlex.quote(a) for a in args))
    code = vmic(list(args))
    if code != expect:
        print(f"demo: `vmic {args[0]}` exited with {code}, expected {expect}", file=sys.stderr)
        raise SystemExit(1)
    return code


def _image(path: Path, header: bytes, size: int) -> None:
    """A small deterministic file that starts with a format's magic bytes."""
    block = hashlib.sha512(path.name.encode()).digest()
    body = (block * (size // len(block) + 1))[: size - len(header)]
    path.write_bytes(header + body)


def _prepare(folder: Path) -> None:
    if folder.exists():
        if not (folder / MARKER).exists():
            print(
                f"demo: {folder} exists and was not made by the demo; choose --dir", file=sys.stderr
            )
            raise SystemExit(1)
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    (folder / MARKER).write_text("made by `make demo`; safe to delete\n")


def demo(folder: Path) -> int:
    _prepare(folder)
    ca, jane, joe = folder / "ca", folder / "jane", folder / "joe"
    manifest, signed = folder / "list.toml", folder / "list.atom"
    print(f"vmic demo in {folder}/ : an endorser signs an image list; a site verifies it.")

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
    )
    _run("keys", "issue", "--ca", str(ca), "--subject", OTHER_DN, "--out", str(joe))
    _run("keys", "show", str(jane / "cert.pem"))

    _step(3, "Two small image files (a qcow2 header and a raw disk with a boot signature)")
    qcow2, raw = folder / "tiny-alma9.qcow2", folder / "tiny-debian12.img"
    _image(qcow2, b"QFI\xfb\x00\x00\x00\x03", 64 * 1024)
    _image(raw, b"\x00" * 510 + b"\x55\xaa", 96 * 1024)
    for image in (qcow2, raw):
        print(f"wrote {image.name} ({image.stat().st_size} bytes)")

    _step(4, "A manifest for a new list, and the two images (hashed with SHA-512)")
    _run(
        "endorse",
        "init",
        str(manifest),
        "--title",
        "vmic demo images",
        "--self-url",
        "https://endorser.example.org/lists/demo.atom",
        "--author",
        "Jane Endorser",
        "--email",
        "jane@example.org",
    )
    _run(
        "endorse",
        "add",
        str(manifest),
        str(qcow2),
        "--url",
        "https://endorser.example.org/images/tiny-alma9.qcow2",
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
        str(raw),
        "--url",
        "https://endorser.example.org/images/tiny-debian12.img",
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
    _run(
        "endorse",
        "sign",
        str(manifest),
        "--cert",
        str(jane / "cert.pem"),
        "--key",
        str(jane / "key.pem"),
        "--trust",
        str(ca),
        "--valid-for",
        "28d",
        "--out",
        str(signed),
    )

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
            return 1
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

    print(f"\nDone. Everything is in {folder}/ (the signed list is {signed.name}).")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--dir", type=Path, default=Path("demo-out"), help="scratch folder")
    return demo(parser.parse_args(argv).dir)


if __name__ == "__main__":
    sys.exit(main())
