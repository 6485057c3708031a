"""The CD image: what is on it, read back by pycdlib, isoinfo and 7z; same inputs, same bytes.

Every CD here is built from real files in ``tmp_path`` by
:func:`~site_agent.context.build.build_context`, written to disk and read
back by an independent reader.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pycdlib
import pytest
from pycdlib.dr import DirectoryRecord

from keys.errors import ConfigError
from site_agent.context.build import ContextRequest, build_context, show_context
from site_agent.context.iso import MAX_EPOCH, build_iso, iso9660_names
from site_agent.context.tree import ContextFile
from tests.support.context import iso_files, write_scripts

SETTINGS = ("SYSLOG_SERVER=logs.example.org:514", "BATCH_SYSTEM=htcondor", "MONITORING=it's $(x)")


@pytest.fixture
def inputs(tmp_path: Path) -> ContextRequest:
    prolog, epilog = write_scripts(tmp_path / "in")
    site_conf = tmp_path / "in" / "site.conf"
    site_conf.write_text("*.* @@logs.example.org:514\n")
    helper = tmp_path / "in" / "helper"
    helper.write_text("#!/bin/sh\necho helper\n")
    helper.chmod(0o750)
    return ContextRequest(
        prolog=prolog,
        epilog=epilog,
        settings=SETTINGS,
        files=(
            f"{site_conf}:etc/rsyslog.d/50-site.conf",
            f"{helper}:bin/site-helper",
            f"{site_conf}:etc/site.conf",
        ),
        out=tmp_path / "out" / "context.iso",
    )


@pytest.fixture(autouse=True)
def _out_folder(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()


def _build(request: ContextRequest, **changes: Any) -> Path:
    changed = replace(request, **changes)
    build_context(changed)
    return changed.out


def test_the_cd_holds_the_scripts_settings_and_files(inputs: ContextRequest) -> None:
    files = iso_files(_build(inputs))
    assert sorted(files) == [
        "bin/site-helper",
        "context.sh",
        "epilog.sh",
        "etc/rsyslog.d/50-site.conf",
        "etc/site.conf",
        "prolog.sh",
    ]
    assert files["prolog.sh"] == (inputs.prolog.read_bytes(), 0o755)
    assert files["epilog.sh"] == (inputs.epilog.read_bytes(), 0o755)
    assert files["etc/rsyslog.d/50-site.conf"] == (b"*.* @@logs.example.org:514\n", 0o644)
    assert files["bin/site-helper"][1] == 0o755
    context_sh, mode = files["context.sh"]
    assert mode == 0o644
    assert b"SYSLOG_SERVER='logs.example.org:514'\n" in context_sh
    assert b"MONITORING='it'\\''s $(x)'\n" in context_sh


def test_volume_label_rock_ridge_and_joliet(inputs: ContextRequest) -> None:
    image = pycdlib.PyCdlib()
    image.open(str(_build(inputs)))
    try:
        assert image.pvd.volume_identifier.rstrip() == b"CONTEXT"
        assert image.has_rock_ridge()
        assert image.has_joliet()
        joliet = {
            f"{folder.rstrip('/')}/{name}"
            for folder, _dirs, names in image.walk(joliet_path="/")
            for name in names
        }
        assert "/etc/rsyslog.d/50-site.conf" in joliet
        iso = {
            f"{folder.rstrip('/')}/{name}"
            for folder, _dirs, names in image.walk(iso_path="/")
            for name in names
        }
    finally:
        image.close()
    # plain ISO 9660 names are interchange level 1: NAME.EXT;1, 8 + 3 d-characters
    for path in iso:
        *folders, leaf = path.strip("/").split("/")
        assert all(re.fullmatch(r"[A-Z0-9_]{1,8}", f) for f in folders), path
        assert re.fullmatch(r"[A-Z0-9_]{1,8}\.[A-Z0-9_]{0,3};1", leaf), path


def test_show_lists_files_and_settings(inputs: ContextRequest) -> None:
    info = show_context(_build(inputs))
    assert info.label == "CONTEXT"
    assert {s.key: s.value for s in info.settings} == dict(s.split("=", 1) for s in SETTINGS)
    assert [(e.path, e.mode) for e in info.entries][:3] == [
        ("bin/site-helper", 0o755),
        ("context.sh", 0o644),
        ("epilog.sh", 0o755),
    ]
    assert info.instance_id is None


def test_two_builds_give_the_same_bytes(inputs: ContextRequest, tmp_path: Path) -> None:
    first = hashlib.sha256(_build(inputs).read_bytes()).hexdigest()
    time.sleep(1.1)  # a clock that leaked into the image would now read another second
    second_out = tmp_path / "out" / "again.iso"
    _build(inputs, out=second_out)
    assert hashlib.sha256(second_out.read_bytes()).hexdigest() == first
    written = build_context(inputs)
    assert written[0].sha256 == first


def test_the_time_zone_of_the_build_machine_does_not_matter() -> None:
    files = [ContextFile(path="prolog.sh", data=b"#!/bin/sh\n", mode=0o755)]
    here = build_iso(files, label="CONTEXT", epoch=1_700_000_000)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TZ", "America/St_Johns")
        time.tzset()
        there = build_iso(files, label="CONTEXT", epoch=1_700_000_000)
    time.tzset()
    assert here == there


def test_file_dates_are_the_given_epoch(tmp_path: Path) -> None:
    files = [ContextFile(path="prolog.sh", data=b"#!/bin/sh\n", mode=0o755)]
    path = tmp_path / "dated.iso"
    path.write_bytes(build_iso(files, label="CONTEXT", epoch=1_700_000_000))  # 2023-11-14 22:13:20Z
    image = pycdlib.PyCdlib()
    image.open(str(path))
    try:
        record = image.get_record(rr_path="/prolog.sh")
        assert isinstance(record, DirectoryRecord)
        date = record.date
        assert (date.years_since_1900 + 1900, date.month, date.day_of_month) == (2023, 11, 14)
        assert (date.hour, date.minute, date.second, date.gmtoffset) == (22, 13, 20, 0)
    finally:
        image.close()
    assert build_iso(files, label="CONTEXT", epoch=1_700_000_001) != path.read_bytes()


def test_epoch_outside_iso9660_dates_is_refused() -> None:
    files = [ContextFile(path="prolog.sh", data=b"", mode=0o755)]
    with pytest.raises(ConfigError, match="outside"):
        build_iso(files, label="CONTEXT", epoch=-1)
    with pytest.raises(ConfigError, match="outside"):
        build_iso(files, label="CONTEXT", epoch=6_000_000_000)
    assert build_iso(files, label="CONTEXT", epoch=MAX_EPOCH)  # the last second of 2155


def test_short_names_never_collide() -> None:
    paths = [
        "configuration.conf",
        "configuration.config",
        "Configuration-2.conf",
        "a.b.c.tar.gz",
        "no_extension_at_all",
        "no_extension_at_all_either",
        "dir.with.dots/x",
        "dir-with-dashes/x",
    ]
    names = iso9660_names(paths)
    # in sorted order of the real names (upper case first), numbered on collision
    assert names["Configuration-2.conf"] == "/CONFIGUR.CON;1"
    assert names["configuration.conf"] == "/CONFIGU1.CON;1"
    assert names["configuration.config"] == "/CONFIGU2.CON;1"
    assert names["a.b.c.tar.gz"] == "/A_B_C_TA.GZ;1"
    assert names["no_extension_at_all"] == "/NO_EXTEN.;1"
    assert names["dir-with-dashes"] == "/DIR_WITH"
    assert names["dir.with.dots"] == "/DIR_WIT1"
    assert names["dir.with.dots/x"] == "/DIR_WIT1/X.;1"
    top = [n for p, n in names.items() if "/" not in p]
    assert len(set(top)) == len(top)


def test_many_similar_names_all_fit_on_one_cd(tmp_path: Path) -> None:
    files = [
        ContextFile(path=f"settings-{n:03}.conf", data=b"%d" % n, mode=0o644) for n in range(120)
    ]
    path = tmp_path / "many.iso"
    path.write_bytes(build_iso(files, label="CONTEXT", epoch=0))
    found = iso_files(path)
    assert {name: data for name, (data, _) in found.items()} == {f.path: f.data for f in files}


@pytest.mark.skipif(shutil.which("isoinfo") is None, reason="isoinfo (genisoimage) not installed")
def test_isoinfo_reads_label_names_and_content(inputs: ContextRequest) -> None:
    iso = str(_build(inputs))
    info = subprocess.run(["isoinfo", "-d", "-i", iso], capture_output=True, text=True, check=True)
    assert "Volume id: CONTEXT" in info.stdout
    assert "Rock Ridge signatures" in info.stdout
    assert "Joliet with UCS level 3 found" in info.stdout
    listing = subprocess.run(
        ["isoinfo", "-R", "-l", "-i", iso], capture_output=True, text=True, check=True
    ).stdout
    assert re.search(r"^-rwxr-xr-x .* prolog\.sh\s*$", listing, flags=re.MULTILINE)
    assert re.search(r"^-rw-r--r-- .* context\.sh\s*$", listing, flags=re.MULTILINE)
    content = subprocess.run(
        ["isoinfo", "-R", "-x", "/etc/rsyslog.d/50-site.conf", "-i", iso],
        capture_output=True,
        check=True,
    ).stdout
    assert content == b"*.* @@logs.example.org:514\n"


@pytest.mark.skipif(shutil.which("7z") is None, reason="7z (p7zip) not installed")
def test_7z_extracts_the_same_files(inputs: ContextRequest, tmp_path: Path) -> None:
    iso = _build(inputs)
    dest = tmp_path / "7z"
    subprocess.run(["7z", "x", "-y", f"-o{dest}", str(iso)], capture_output=True, check=True)
    extracted = {str(p.relative_to(dest)): p.read_bytes() for p in dest.rglob("*") if p.is_file()}
    assert extracted == {name: data for name, (data, _) in iso_files(iso).items()}


def test_a_failed_build_leaves_the_previous_cd_untouched(inputs: ContextRequest) -> None:
    out = _build(inputs)
    before = out.read_bytes()
    with pytest.raises(ConfigError):
        _build(inputs, settings=(*SETTINGS, "bad-key=1"))
    with pytest.raises(ConfigError):
        _build(inputs, files=("/nonexistent/file:etc/x",))
    assert out.read_bytes() == before
    assert sorted(p.name for p in out.parent.iterdir()) == ["context.iso"]


def test_nothing_is_written_when_the_input_is_bad(inputs: ContextRequest) -> None:
    with pytest.raises(ConfigError, match="reserved"):
        _build(inputs, settings=("PATH=/tmp",))
    assert list(inputs.out.parent.iterdir()) == []
