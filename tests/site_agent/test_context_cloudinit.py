"""The NoCloud seed: label cidata, the CD's files, and user-data that cloud-init can run.

``user-data`` is parsed with PyYAML's ``safe_load`` (what cloud-init uses),
and the ``bootcmd`` and ``runcmd`` entries are then run as the argument
lists they are, against a folder standing for the mounted seed.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pycdlib
import pytest
import yaml

from keys.errors import ConfigError
from site_agent.context import cloudinit, install
from site_agent.context.build import ContextRequest, build_context, default_seed_path, show_context
from site_agent.context.tree import ContextFile
from tests.support.context import extract, iso_files, run_boot, write_scripts


def _request(tmp_path: Path, **changes: Any) -> ContextRequest:
    prolog, epilog = write_scripts(tmp_path / "in")
    conf = tmp_path / "in" / "site.conf"
    conf.write_text("site-conf-content")
    fields: dict[str, Any] = {
        "prolog": prolog,
        "epilog": epilog,
        "settings": ("SYSLOG_SERVER=logs", "BATCH_SYSTEM=slurm", "MONITORING=mon"),
        "files": (f"{conf}:etc/site.conf",),
        "out": tmp_path / "context.iso",
        "cloud_init": True,
    }
    return ContextRequest(**{**fields, **changes})


def _cloud_config(data: bytes) -> dict[str, Any]:
    text = data.decode("ascii")
    assert text.startswith("#cloud-config\n")
    loaded = yaml.safe_load(text)
    assert isinstance(loaded, dict)
    return loaded


def test_cloud_init_writes_a_cidata_seed_beside_the_cd(tmp_path: Path) -> None:
    written = build_context(_request(tmp_path))
    assert [(w.path.name, w.label) for w in written] == [
        ("context.iso", "CONTEXT"),
        ("context-cidata.iso", "cidata"),
    ]
    seed = iso_files(tmp_path / "context-cidata.iso")
    cd = iso_files(tmp_path / "context.iso")
    assert sorted(seed) == sorted([*cd, "meta-data", "user-data"])
    assert all(seed[name] == cd[name] for name in cd)
    image = pycdlib.PyCdlib()
    image.open(str(tmp_path / "context-cidata.iso"))
    try:
        assert image.pvd.volume_identifier.rstrip() == b"cidata"
    finally:
        image.close()


def test_user_data_runs_the_packaged_script_at_two_stages(tmp_path: Path) -> None:
    build_context(_request(tmp_path))
    config = _cloud_config(iso_files(tmp_path / "context-cidata.iso")["user-data"][0])
    assert set(config) == {"bootcmd", "runcmd"}
    script = install.script_text()
    assert config["bootcmd"] == [
        ["env", "VMIC_CONTEXT_LABEL=cidata", "sh", "-c", script, "vmic-context", "prolog"]
    ]
    assert config["runcmd"] == [
        ["env", "VMIC_CONTEXT_LABEL=cidata", "sh", "-c", script, "vmic-context", "epilog"]
    ]


def test_the_user_data_commands_run_prolog_then_epilog(tmp_path: Path) -> None:
    build_context(_request(tmp_path))
    seed = tmp_path / "context-cidata.iso"
    folder = extract(seed, tmp_path / "seed")
    config = _cloud_config((folder / "user-data").read_bytes())
    log = tmp_path / "log"
    env = {"VMIC_CONTEXT_DIR": str(folder), "VMIC_TEST_LOG": str(log)}
    for stage in ("bootcmd", "runcmd"):
        (argv,) = config[stage]
        result = run_boot(argv, env=env)
        assert result.returncode == 0, result.stderr
    assert log.read_text().splitlines() == [
        "prolog logs|slurm",
        f"epilog mon|{folder}|site-conf-content",
    ]


def test_without_the_seed_attached_the_user_data_commands_do_nothing(tmp_path: Path) -> None:
    config = _cloud_config(cloudinit.user_data(install.script_text()))
    (argv,) = config["bootcmd"]
    argv = [
        a.replace("VMIC_CONTEXT_LABEL=cidata", "VMIC_CONTEXT_LABEL=VMIC_TEST_NONE") for a in argv
    ]
    result = run_boot(argv, env={})
    assert result.returncode == 0
    assert "no CD labelled VMIC_TEST_NONE" in result.stdout


def test_meta_data_instance_id_follows_the_content(tmp_path: Path) -> None:
    one = [ContextFile(path="prolog.sh", data=b"a", mode=0o755)]
    same = [ContextFile(path="prolog.sh", data=b"a", mode=0o755)]
    other = [ContextFile(path="prolog.sh", data=b"b", mode=0o755)]
    other_mode = [ContextFile(path="prolog.sh", data=b"a", mode=0o644)]
    assert cloudinit.meta_data(one) == cloudinit.meta_data(same)
    ids = {cloudinit.instance_id(f) for f in (one, other, other_mode)}
    assert len(ids) == 3
    loaded = yaml.safe_load(cloudinit.meta_data(one))
    assert loaded == {"instance-id": cloudinit.instance_id(one)}
    assert loaded["instance-id"].startswith("vmic-context-")


def test_show_reads_the_seed_too(tmp_path: Path) -> None:
    build_context(_request(tmp_path))
    info = show_context(tmp_path / "context-cidata.iso")
    assert info.label == "cidata"
    assert info.instance_id is not None
    assert info.instance_id.startswith("vmic-context-")
    assert [s.key for s in info.settings] == ["SYSLOG_SERVER", "BATCH_SYSTEM", "MONITORING"]


def test_seed_builds_are_reproducible(tmp_path: Path) -> None:
    first = build_context(_request(tmp_path))
    second = build_context(_request(tmp_path, out=tmp_path / "again.iso"))
    assert [w.sha256 for w in first] == [w.sha256 for w in second]


def test_seed_out_names_the_seed_and_needs_cloud_init(tmp_path: Path) -> None:
    written = build_context(_request(tmp_path, seed_out=tmp_path / "seed.img"))
    assert written[1].path == tmp_path / "seed.img"
    with pytest.raises(ConfigError, match="only for --cloud-init"):
        build_context(_request(tmp_path, cloud_init=False, seed_out=tmp_path / "seed.img"))
    with pytest.raises(ConfigError, match="both be"):
        build_context(_request(tmp_path, seed_out=tmp_path / "context.iso"))
    assert default_seed_path(Path("/x/site.iso")) == Path("/x/site-cidata.iso")


def test_the_script_survives_yaml_unchanged() -> None:
    """A guard on the packaged script: plain ASCII, no tabs, so the YAML block holds it exactly."""
    script = install.script_text()
    config = yaml.safe_load(cloudinit.user_data(script))
    assert config["bootcmd"][0][4] == script
    with pytest.raises(ValueError, match="ASCII"):
        cloudinit.user_data("echo\ttab\n")


def test_cloud_init_schema_keys_are_plain_lists() -> None:
    """bootcmd and runcmd entries are argument lists, so cloud-init quotes each word itself."""
    config = yaml.safe_load(cloudinit.user_data(install.script_text()))
    for stage in ("bootcmd", "runcmd"):
        for entry in config[stage]:
            assert isinstance(entry, list)
            assert all(isinstance(word, str) for word in entry)
    assert subprocess.run(["sh", "-n", "-c", config["bootcmd"][0][4]], check=False).returncode == 0
