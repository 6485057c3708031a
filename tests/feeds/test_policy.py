"""The trusted-image policy check on real image trees, in every form it reads.

One hostile tree holds something for every rule, one clean tree must pass;
both are checked as a folder, as tar archives (plain, gzip, bzip2, xz), as
an ext4 file system made by mke2fs, and inside MBR and GPT partition tables.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from feeds.policy.check import check_image
from feeds.policy.model import PolicyLimits, Report, Severity
from feeds.policy.rules import RULES
from keys.errors import ConfigError
from tests.support.images import (
    MIB,
    Node,
    Tree,
    debugfs_write,
    fat_boot_sector,
    folder,
    openssh_private_key,
    pem_private_key,
    pkcs12_bundle,
    symlink,
    text,
    write_ext4,
    write_folder,
    write_gpt_disk,
    write_mbr_disk,
    write_tar,
)

PASSWD = """root:x:0:0:root:/root:/bin/bash
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
"""
SHADOW = """root:*:19000:0:99999:7:::
daemon:*:19000:0:99999:7:::
nobody:!:19000:0:99999:7:::
"""
DOCKER_AUTHS = {"auths": {"registry.example.org": {"auth": "dXNlcjpzZWNyZXQ="}}}


def clean_tree() -> Tree:
    return {
        "/etc/passwd": text(PASSWD),
        "/etc/shadow": text(SHADOW, 0o640),
        "/etc/os-release": text('PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\n'),
        "/etc/machine-id": text(""),
        "/etc/ssh/sshd_config": text("PermitRootLogin no\n"),
        "/etc/grid-security/certificates/ca.pem": text("-----BEGIN CERTIFICATE-----\n"),
        "/root/.bashrc": text("alias ll='ls -l'\n"),
        "/root/.ssh/authorized_keys": text("# keys are added at boot by contextualisation\n"),
        "/root/.docker/config.json": text('{"credsStore": "secretservice"}'),
        "/var/lib/dpkg/status": text("Package: base-files\n"),
        "/boot/vmlinuz-6.1.0-13-amd64": Node(data=b"\x7fELF-ish kernel"),
        "/usr/lib/modules/6.1.0-13-amd64/modules.dep": text(""),
        "/usr/share/doc/base-files/README": text("a readme\n"),
        "/lib": symlink("usr/lib"),
        "/etc/mtab": symlink("/proc/self/mounts"),
        "/tmp": folder(),
    }


def hostile_tree() -> Tree:
    tree = clean_tree()
    tree.update(
        {
            "/etc/passwd": text(
                PASSWD
                + "alice:x:1000:1000:Alice:/home/alice:/bin/bash\n"
                + "svc:x:1001:1001::/home/svc:/usr/sbin/nologin\n"
                + "guest::1002:1002::/home/guest:/usr/sbin/nologin\n"
            ),
            "/etc/shadow": text(
                SHADOW.replace("root:*:", "root:$6$salt$0123456789abcdef:")
                + "alice:!:19000::::::\nsvc:*:19000::::::\n"
            ),
            "/etc/ssh/ssh_host_ed25519_key": Node(data=openssh_private_key(), mode=0o600),
            "/etc/ssh/ssh_host_ed25519_key.pub": text("ssh-ed25519 AAAA host\n"),
            "/root/.ssh/authorized_keys": text("ssh-ed25519 AAAAC3Nza builder@laptop\n"),
            "/home/alice/.bash_history": text("mysql -u root -psecret\n"),
            "/home/svc/notes.txt": text("left behind\n"),
            "/etc/grid-security/hostcert.pem": text("-----BEGIN CERTIFICATE-----\n"),
            "/etc/grid-security/hostkey.pem": Node(data=pem_private_key(), mode=0o400),
            "/tmp/x509up_u1000": text("-----BEGIN CERTIFICATE-----\n"),
            "/root/.netrc": text("machine example.org login me password secret\n"),
            "/root/.aws/credentials": text("[default]\naws_secret_access_key = x\n"),
            "/root/.docker/config.json": text(json.dumps(DOCKER_AUTHS)),
            "/etc/machine-id": text("0123456789abcdef0123456789abcdef\n"),
            "/var/lib/cloud/instances/i-0abc/obj.pkl": text("state"),
            "/var/lib/cloud/instance": symlink("/var/lib/cloud/instances/i-0abc"),
            "/opt/app/server.key": Node(data=pem_private_key(), mode=0o600),
            "/srv/deploy.ppk": text("PuTTY-User-Key-File-3: ssh-ed25519\nEncryption: none\n"),
            "/srv/bundle.bin": Node(data=pkcs12_bundle()),
            "/etc/ssl/private/ssl-cert-snakeoil.key": Node(data=pem_private_key(), mode=0o600),
            "/usr/lib/python3/dist-packages/lib/tests/key.pem": Node(data=pem_private_key()),
        }
    )
    return tree


# path -> (rule, severity) that the hostile tree must give, in every form
EXPECTED = {
    "/etc/shadow:root": ("password", Severity.ERROR),
    "/etc/passwd:guest": ("password", Severity.ERROR),
    "/etc/passwd:alice": ("human-account", Severity.ERROR),
    "/etc/passwd:svc": ("human-account", Severity.ERROR),
    "/etc/ssh/ssh_host_ed25519_key": ("ssh-host-key", Severity.ERROR),
    "/root/.ssh/authorized_keys": ("authorized-keys", Severity.ERROR),
    "/home/alice/.bash_history": ("shell-history", Severity.ERROR),
    "/etc/grid-security/hostcert.pem": ("host-credential", Severity.ERROR),
    "/etc/grid-security/hostkey.pem": ("host-credential", Severity.ERROR),
    "/tmp/x509up_u1000": ("grid-proxy", Severity.ERROR),
    "/root/.netrc": ("credentials-file", Severity.ERROR),
    "/root/.aws/credentials": ("credentials-file", Severity.ERROR),
    "/root/.docker/config.json": ("credentials-file", Severity.ERROR),
    "/etc/machine-id": ("machine-id", Severity.WARNING),
    "/var/lib/cloud/instance": ("cloud-init-state", Severity.WARNING),
    "/var/lib/cloud/instances": ("cloud-init-state", Severity.WARNING),
    "/opt/app/server.key": ("private-key", Severity.ERROR),
    "/srv/deploy.ppk": ("private-key", Severity.ERROR),
    "/srv/bundle.bin": ("private-key", Severity.ERROR),
    "/etc/ssl/private/ssl-cert-snakeoil.key": ("host-credential", Severity.ERROR),
    "/usr/lib/python3/dist-packages/lib/tests/key.pem": ("private-key", Severity.WARNING),
}

Form = Callable[[Tree, Path], Path]


def as_folder(tree: Tree, tmp: Path) -> Path:
    return write_folder(tree, tmp / "root")


def as_tar(compression: str) -> Form:
    def make(tree: Tree, tmp: Path) -> Path:
        suffix = f".tar.{compression}" if compression else ".tar"
        return write_tar(tree, tmp / f"image{suffix}", compression)

    return make


def as_ext4(tree: Tree, tmp: Path) -> Path:
    return write_ext4(tree, tmp / "image.ext4", tmp)


def as_mbr(tree: Tree, tmp: Path) -> Path:
    fs = write_ext4(tree, tmp / "root.ext4", tmp).read_bytes()
    return write_mbr_disk([(0x83, fs)], tmp / "disk.raw")


def as_gpt(tree: Tree, tmp: Path) -> Path:
    fs = write_ext4(tree, tmp / "root.ext4", tmp).read_bytes()
    return write_gpt_disk([fs], tmp / "disk.raw")


FORMS = {
    "folder": (as_folder, "directory"),
    "tar": (as_tar(""), "tar"),
    "tar.gz": (as_tar("gz"), "tar.gz"),
    "tar.bz2": (as_tar("bz2"), "tar.bz2"),
    "tar.xz": (as_tar("xz"), "tar.xz"),
    "ext4": (as_ext4, "disk"),
    "mbr": (as_mbr, "disk"),
    "gpt": (as_gpt, "disk"),
}


def by_path(report: Report) -> dict[str, tuple[str, Severity]]:
    return {f.path: (f.rule, f.severity) for f in report.findings}


@pytest.mark.parametrize("form", sorted(FORMS))
def test_a_clean_image_passes(form: str, tmp_path: Path) -> None:
    make, kind = FORMS[form]

    report = check_image(make(clean_tree(), tmp_path))

    assert report.kind == kind
    assert report.findings == ()
    assert report.clean
    facts = {f.name: f.value for f in report.facts}
    assert facts["os"] == "Debian GNU/Linux 12 (bookworm)"
    assert facts["package manager"] == "dpkg"
    assert facts["kernels"] == "6.1.0-13-amd64"


@pytest.mark.parametrize("form", sorted(FORMS))
def test_every_rule_finds_its_case_in_a_hostile_image(form: str, tmp_path: Path) -> None:
    make, _ = FORMS[form]

    report = check_image(make(hostile_tree(), tmp_path))

    assert by_path(report) == EXPECTED
    assert not report.clean
    assert {f.rule for f in report.errors} == {
        rule for rule, severity in EXPECTED.values() if severity is Severity.ERROR
    }
    assert all(f.reason for f in report.findings)


def test_allowed_rules_are_shown_but_do_not_count(tmp_path: Path) -> None:
    tree = clean_tree()
    tree["/root/.bash_history"] = text("ls\n")

    report = check_image(write_folder(tree, tmp_path / "root"), allow=["shell-history"])

    (finding,) = report.findings
    assert (finding.rule, finding.allowed) == ("shell-history", True)
    assert report.clean


def test_an_unknown_rule_to_allow_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no policy rule nonsense"):
        check_image(write_folder(clean_tree(), tmp_path / "root"), allow=["nonsense"])


def test_every_rule_has_a_reason_and_a_severity() -> None:
    for rule in RULES.values():
        assert rule.title
        assert rule.why
        assert rule.severity in Severity


# -- hostile archives: reported, never followed, never unpacked -------------------------


def hostile_archive(out: Path, victim: Path) -> Path:
    """Members that escape by '..', by absolute paths and through links, devices, a loop."""
    with tarfile.open(out, "w:gz") as archive:

        def add(
            name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", link: str = ""
        ) -> None:
            info = tarfile.TarInfo(name)
            info.type, info.linkname, info.size = kind, link, len(data)
            archive.addfile(info, io.BytesIO(data) if data else None)

        add("./etc/passwd", data=PASSWD.encode())
        add(f"../../../../../..{victim}", data=b"overwritten")
        add("/root/.ssh/authorized_keys", data=b"ssh-ed25519 AAAA attacker\n")
        add("./loop-a", tarfile.SYMTYPE, link="loop-b")
        add("./loop-b", tarfile.SYMTYPE, link="loop-a")
        add("./escape", tarfile.SYMTYPE, link=str(victim))
        add("./escape/authorized_keys", data=b"through the link\n")
        add("./dev/sda", tarfile.BLKTYPE)
        add("./dev/null", tarfile.CHRTYPE)
        add("./fifo", tarfile.FIFOTYPE)
        add("./hard", tarfile.LNKTYPE, link="etc/passwd")
    return out


def test_hostile_archive_members_are_reported_and_nothing_escapes(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"untouched")
    archive = hostile_archive(tmp_path / "evil.tar.gz", victim)
    before = sorted(p.name for p in tmp_path.iterdir())

    report = check_image(archive)

    found = {(f.path, f.rule, f.severity) for f in report.findings}
    assert found == {
        (f"../../../../../..{victim}", "archive-member", Severity.ERROR),
        ("/root/.ssh/authorized_keys", "archive-member", Severity.WARNING),  # absolute
        ("/root/.ssh/authorized_keys", "authorized-keys", Severity.ERROR),
        ("/escape/authorized_keys", "authorized-keys", Severity.ERROR),
    }
    assert victim.read_bytes() == b"untouched"
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert report.files == 10  # every member but the '..' one; devices counted, ignored


def test_a_decompression_bomb_stops_with_a_finding(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.tar.gz"
    with tarfile.open(bomb, "w:gz") as archive:
        info = tarfile.TarInfo("zeros")
        info.size = 64 * MIB
        archive.addfile(info, io.BytesIO(bytes(64 * MIB)))
    assert bomb.stat().st_size < 256 * 1024
    limits = PolicyLimits(max_inflation=20, min_inflation_budget=MIB)

    report = check_image(bomb, limits=limits)

    assert [(f.rule, f.severity) for f in report.findings] == [("archive-bomb", Severity.ERROR)]


def test_a_damaged_archive_reports_what_it_read(tmp_path: Path) -> None:
    whole = write_tar(hostile_tree(), tmp_path / "whole.tar.gz", "gz").read_bytes()
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(whole[: len(whole) // 2])

    report = check_image(cut)

    rules = {f.rule for f in report.findings}
    assert "not-inspected" in rules
    assert not report.clean


def test_too_many_entries_stop_the_scan(tmp_path: Path) -> None:
    tree = {f"/f{n}": text("x") for n in range(50)}

    report = check_image(
        write_tar(tree, tmp_path / "many.tar"), limits=PolicyLimits(max_entries=10)
    )

    assert [f.rule for f in report.errors] == ["not-inspected"]
    assert "more than 10 entries" in report.errors[0].reason


# -- what cannot be read is said --------------------------------------------------------


def test_a_raw_file_without_a_file_system_is_not_inspected(tmp_path: Path) -> None:
    blob = tmp_path / "blob.img"
    blob.write_bytes(bytes(range(256)) * 64)

    report = check_image(blob)

    assert [(f.rule, f.severity) for f in report.findings] == [("not-inspected", Severity.ERROR)]
    assert "no ext2/3/4 file system" in report.findings[0].reason


def test_a_partition_of_another_file_system_is_named_but_the_ext_one_is_read(
    tmp_path: Path,
) -> None:
    fs = write_ext4(hostile_tree(), tmp_path / "root.ext4", tmp_path).read_bytes()
    disk = write_mbr_disk([(0xEF, fat_boot_sector() + bytes(2 * MIB)), (0x83, fs)], tmp_path / "d")

    report = check_image(disk)

    found = by_path(report)
    assert found["partition 1:"] == ("not-inspected", Severity.INFO)
    assert found["partition 2:/etc/ssh/ssh_host_ed25519_key"] == ("ssh-host-key", Severity.ERROR)
    assert len(found) == len(EXPECTED) + 1


def test_qcow2_without_qemu_img_says_what_to_install(tmp_path: Path) -> None:
    if shutil.which("qemu-img"):
        pytest.skip("qemu-img is installed; the conversion is tested instead")
    image = tmp_path / "image.qcow2"
    image.write_bytes(b"QFI\xfb" + bytes(1020))

    report = check_image(image)

    (finding,) = report.findings
    assert finding.rule == "not-inspected"
    assert "qemu-img" in finding.reason


def test_qcow2_is_read_through_qemu_img(tmp_path: Path) -> None:
    tool = shutil.which("qemu-img")
    if tool is None:
        pytest.skip("qemu-img is not installed")
    raw = as_mbr(hostile_tree(), tmp_path)
    image = tmp_path / "image.qcow2"
    subprocess.run([tool, "convert", "-O", "qcow2", str(raw), str(image)], check=True)

    report = check_image(image)

    assert report.kind == "qcow2"
    assert by_path(report) == EXPECTED


def test_a_missing_image_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        check_image(tmp_path / "absent.img")


# -- what a hostile image author might try ----------------------------------------------


def test_a_decoy_file_system_at_the_start_does_not_hide_the_partitions(tmp_path: Path) -> None:
    decoy = write_ext4(clean_tree(), tmp_path / "decoy.ext4", tmp_path / "a", size_mib=1)
    hostile = write_ext4(hostile_tree(), tmp_path / "root.ext4", tmp_path / "b").read_bytes()
    disk = write_mbr_disk([(0x83, hostile)], tmp_path / "disk.raw")
    raw = bytearray(disk.read_bytes())
    raw[512 : 1024 * 1024] = decoy.read_bytes()[512 : 1024 * 1024]  # keep the table in sector 0
    disk.write_bytes(bytes(raw))

    report = check_image(disk)

    assert not report.clean
    assert ("ssh-host-key", Severity.ERROR) in by_path(report).values()
    assert by_path(report)["partition 1:/etc/ssh/ssh_host_ed25519_key"][0] == "ssh-host-key"


def test_a_root_file_system_vmic_cannot_read_is_an_error_and_swap_is_not(tmp_path: Path) -> None:
    boot = write_ext4(clean_tree(), tmp_path / "boot.ext4", tmp_path).read_bytes()
    xfs = b"XFSB" + bytes(2 * MIB)
    swap = bytearray(2 * MIB)
    swap[4086:4096] = b"SWAPSPACE2"
    disk = write_mbr_disk([(0x83, boot), (0x83, xfs), (0x82, bytes(swap))], tmp_path / "d.raw")

    report = check_image(disk)

    found = by_path(report)
    assert found["partition 2:"] == ("not-inspected", Severity.ERROR)
    assert "xfs" in next(f.reason for f in report.findings if f.path == "partition 2:")
    assert found["partition 3:"] == ("not-inspected", Severity.INFO)
    assert not report.clean


def test_a_directory_hard_link_is_reported(tmp_path: Path) -> None:
    fs = write_ext4(hostile_tree(), tmp_path / "image.ext4", tmp_path)
    etc = next(
        line.split("/")[1]
        for line in subprocess.run(
            [shutil.which("debugfs") or "/usr/sbin/debugfs", "-c", "-R", "ls -p /", str(fs)],
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .splitlines()
        if "/etc/" in line
    )
    debugfs_write(fs, f"ln <{etc}> /aaa")

    report = check_image(fs)

    twice = [f for f in report.findings if "reached twice" in f.reason]
    assert [(f.path, f.severity) for f in twice] in (
        [("/aaa", Severity.ERROR)],
        [("/etc", Severity.ERROR)],
    )
    assert "/etc/ssh/ssh_host_ed25519_key" in by_path(
        report
    ) or "/aaa/ssh/ssh_host_ed25519_key" in by_path(report)


def test_account_files_and_authorized_keys_behind_links_are_findings(tmp_path: Path) -> None:
    tree = clean_tree()
    tree["/var/backups/shadow"] = text("root:$6$s$hash:19000::::::\n")
    tree["/etc/shadow"] = symlink("/var/backups/shadow")
    tree["/srv/keys"] = text("ssh-ed25519 AAAA someone\n")
    tree["/root/.ssh/authorized_keys"] = symlink("/srv/keys")

    report = check_image(write_tar(tree, tmp_path / "links.tar"))

    found = by_path(report)
    assert found["/etc/shadow"] == ("not-inspected", Severity.ERROR)
    assert found["/root/.ssh/authorized_keys"] == ("authorized-keys", Severity.ERROR)


def test_short_passwd_lines_empty_shells_and_second_roots_count(tmp_path: Path) -> None:
    tree = clean_tree()
    tree["/etc/passwd"] = text(PASSWD + "guest::0:0::/root\nbob:x:1500:1500::/home/bob:\n")
    tree["/etc/shadow"] = text(SHADOW + "bob:!$6$salt$oldhash:19000::::::\n")

    found = by_path(check_image(write_folder(tree, tmp_path / "root")))

    assert found["/etc/passwd:guest"] == ("password", Severity.ERROR)  # empty password
    assert found["/etc/passwd:bob"] == ("human-account", Severity.ERROR)  # empty shell: /bin/sh
    assert found["/etc/shadow:bob"] == ("password", Severity.WARNING)  # locked, hash kept


def test_a_second_uid_0_account_is_a_finding(tmp_path: Path) -> None:
    tree = clean_tree()
    tree["/etc/passwd"] = text(PASSWD + "toor:x:0:0::/root:/bin/sh\n")
    tree["/etc/shadow"] = text(SHADOW + "toor:*:19000::::::\n")

    found = by_path(check_image(write_folder(tree, tmp_path / "root")))

    assert found["/etc/passwd:toor"] == ("human-account", Severity.ERROR)


def test_keys_are_found_where_a_weaker_rule_matched_first_or_the_file_is_large(
    tmp_path: Path,
) -> None:
    key = pem_private_key()
    tree = clean_tree()
    tree["/root/.viminfo"] = Node(data=key)
    tree["/root/test/deploy.key"] = Node(data=key)
    tree["/opt/big.pem"] = Node(data=key + b"\n" + bytes(3 * MIB))
    tree["/opt/keystore"] = Node(data=b"\xfe\xed\xfe\xed" + bytes(60))
    tree["/usr/local/share/site.key"] = Node(data=key)
    tree["/usr/share/tool/Templates/Temporary.pfx"] = Node(data=pkcs12_bundle())

    found = by_path(check_image(write_tar(tree, tmp_path / "keys.tar.gz", "gz")))

    assert found["/root/.viminfo"] == ("private-key", Severity.ERROR)
    assert found["/root/test/deploy.key"] == ("private-key", Severity.ERROR)
    assert found["/opt/big.pem"] == ("private-key", Severity.ERROR)
    assert found["/opt/keystore"] == ("private-key", Severity.ERROR)
    assert found["/usr/local/share/site.key"] == ("private-key", Severity.ERROR)
    assert found["/usr/share/tool/Templates/Temporary.pfx"] == ("private-key", Severity.WARNING)


def test_a_huge_pax_header_is_refused_quickly(tmp_path: Path) -> None:
    archive = tmp_path / "pax.tar"
    with tarfile.open(archive, "w", format=tarfile.PAX_FORMAT) as out:
        info = tarfile.TarInfo("a")
        info.pax_headers = {"comment": "1" * (2 * MIB)}
        out.addfile(info, io.BytesIO(b""))

    report = check_image(archive)

    assert [(f.rule, f.severity) for f in report.findings] == [("not-inspected", Severity.ERROR)]
    assert "PAX header" in report.findings[0].reason


def test_a_damaged_header_in_the_middle_is_not_taken_for_the_end(tmp_path: Path) -> None:
    first = write_tar({"/etc/hostname": text("image\n")}, tmp_path / "one.tar").read_bytes()
    rest = write_tar(
        {"/root/.ssh/authorized_keys": text("ssh-ed25519 AAAA x\n")}, tmp_path / "two.tar"
    ).read_bytes()
    body = first[: first.index(b"\0" * 1024, 1024)]  # members, without the end blocks
    joined = tmp_path / "joined.tar"
    joined.write_bytes(body + b"\xff" * 512 + rest)

    report = check_image(joined)

    assert "a damaged header" in " ".join(f.reason for f in report.errors)


def test_malformed_partition_tables_give_findings_not_exceptions(tmp_path: Path) -> None:
    disk = bytearray(4 * MIB)
    disk[446:462] = bytes([0, 0, 0, 0, 0xEE, 0, 0, 0]) + (1).to_bytes(4, "little") * 2
    disk[510:512] = b"\x55\xaa"
    disk[512:520] = b"EFI PART"  # a GPT header cut short, then a table beyond the disk
    disk[512 + 72 : 512 + 88] = (2**60).to_bytes(8, "little") + (128).to_bytes(4, "little") * 2
    path = tmp_path / "bad.raw"
    path.write_bytes(bytes(disk))

    report = check_image(path)

    assert [f.rule for f in report.errors] == ["not-inspected"]


def test_a_question_mark_in_the_image_name_is_not_an_option(tmp_path: Path) -> None:
    write_ext4(clean_tree(), tmp_path / "q", tmp_path / "a")
    odd = write_ext4(hostile_tree(), tmp_path / "q?offset=0", tmp_path / "b")

    report = check_image(odd)

    assert by_path(report) == EXPECTED


def test_a_qcow2_that_keeps_its_data_in_a_host_file_is_not_read(tmp_path: Path) -> None:
    tool = shutil.which("qemu-img")
    if tool is None:
        pytest.skip("qemu-img is not installed")
    host_file = as_mbr(hostile_tree(), tmp_path)
    image = tmp_path / "external.qcow2"
    subprocess.run(
        [
            tool,
            "create",
            "-f",
            "qcow2",
            "-o",
            f"data_file={host_file},data_file_raw=on",
            str(image),
            str(host_file.stat().st_size),
        ],
        check=True,
        capture_output=True,
    )

    report = check_image(image)

    assert [(f.rule, f.severity) for f in report.findings] == [("not-inspected", Severity.ERROR)]
    assert "another file" in report.findings[0].reason
