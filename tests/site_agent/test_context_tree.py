"""What may go on the CD: --file destinations, sources, and the two scripts' first line."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from keys.errors import ConfigError
from site_agent.context.tree import (
    ExtraFile,
    check_dest,
    check_script,
    make_tree,
    parse_file_spec,
    read_source,
)
from tests.support.context import write_scripts


@pytest.mark.parametrize(
    "dest",
    ["site.conf", "etc/rsyslog.d/50-site.conf", "bin/helper", "_x/y+z", "a/b/c/d/e/f/g"],
)
def test_good_destinations(dest: str) -> None:
    assert check_dest(dest) == dest


@pytest.mark.parametrize(
    ("dest", "message"),
    [
        ("/etc/passwd", "absolute"),
        ("../outside", r"\.\. part"),
        ("etc/../../x", r"\.\. part"),
        ("./x", r"\. part"),
        ("etc//x", "empty"),
        ("etc/", "empty"),
        ("", "empty"),
        (".hidden", "not allowed"),
        ("-rf", "not allowed"),
        ("with space", "not allowed"),
        ("semi;colon", "not allowed"),
        ("back\\slash", "not allowed"),
        ("new\nline", "not allowed"),
        ("dollar$(x)", "not allowed"),
        ("x" * 65, "not allowed"),
        ("a/b/c/d/e/f/g/h", "too deep"),
        ("prolog.sh", "clashes"),
        ("epilog.sh", "clashes"),
        ("context.sh", "clashes"),
        ("Context.SH", "clashes"),
        ("user-data", "clashes"),
        ("meta-data", "clashes"),
        ("network-config", "clashes"),
        ("prolog.sh/x", "clashes"),
    ],
)
def test_bad_destinations_are_refused(dest: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        check_dest(dest)
    assert caught.value.hint


def test_file_spec_splits_at_the_last_colon(tmp_path: Path) -> None:
    assert parse_file_spec("/a:b/c.conf:etc/c.conf") == ExtraFile(
        source=Path("/a:b/c.conf"), dest="etc/c.conf"
    )
    for bad in ("no-colon", ":etc/x", "src:"):
        with pytest.raises(ConfigError):
            parse_file_spec(bad)


def test_a_source_must_be_a_regular_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a regular file"):
        read_source(tmp_path, what="--file source")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match="not a regular file"):
        read_source(fifo, what="--file source")  # and does not wait for a writer
    with pytest.raises(ConfigError, match="cannot read"):
        read_source(tmp_path / "missing", what="--file source")
    big = tmp_path / "big"
    big.write_bytes(b"x" * 11)
    with pytest.raises(ConfigError, match="larger than 10 bytes"):
        read_source(big, what="--file source", limit=10)


def test_a_link_to_a_regular_file_is_read(tmp_path: Path) -> None:
    target = tmp_path / "real"
    target.write_bytes(b"data")
    (tmp_path / "link").symlink_to(target)
    assert read_source(tmp_path / "link", what="--file source")[0] == b"data"


@pytest.mark.parametrize(
    "first_line", [b"#!/bin/sh", b"#! /bin/sh", b"#!/usr/bin/env sh", b"#!/usr/bin/sh", b"echo"]
)
def test_sh_scripts_are_accepted(first_line: bytes) -> None:
    data = first_line + b"\necho hi\n"
    assert check_script("prolog.sh", data) == data


@pytest.mark.parametrize(
    "first_line", [b"#!/bin/bash", b"#!/usr/bin/env bash", b"#!/bin/sh -e", b"#!/usr/bin/python3"]
)
def test_other_interpreters_are_refused_since_the_cd_runs_sh(first_line: bytes) -> None:
    with pytest.raises(ConfigError, match="run with /bin/sh") as caught:
        check_script("prolog.sh", first_line + b"\necho hi\n")
    assert "set -e" in caught.value.hint


def test_tree_is_sorted_with_modes_from_the_sources(tmp_path: Path) -> None:
    prolog, epilog = write_scripts(tmp_path)
    plain, tool = tmp_path / "plain", tmp_path / "tool"
    plain.write_text("x")
    tool.write_text("#!/bin/sh\n")
    plain.chmod(0o600)  # private at the source; world-readable on a CD anyway
    tool.chmod(0o700)
    tree = make_tree(
        prolog=prolog,
        epilog=epilog,
        settings=(),
        files=[ExtraFile(source=tool, dest="z/tool"), ExtraFile(source=plain, dest="a.conf")],
    )
    assert [(f.path, f.mode) for f in tree] == [
        ("a.conf", 0o644),
        ("context.sh", 0o644),
        ("epilog.sh", 0o755),
        ("prolog.sh", 0o755),
        ("z/tool", 0o755),
    ]


def test_a_file_and_a_folder_of_the_same_name_clash(tmp_path: Path) -> None:
    prolog, epilog = write_scripts(tmp_path)
    with pytest.raises(ConfigError, match="both a file and a folder"):
        make_tree(
            prolog=prolog,
            epilog=epilog,
            settings=(),
            files=[ExtraFile(source=prolog, dest="etc"), ExtraFile(source=prolog, dest="etc/x")],
        )
    with pytest.raises(ConfigError, match="twice"):
        make_tree(
            prolog=prolog,
            epilog=epilog,
            settings=(),
            files=[ExtraFile(source=prolog, dest="x"), ExtraFile(source=epilog, dest="x")],
        )
