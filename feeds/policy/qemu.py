"""qcow2, vmdk, vdi, vhd and vhdx disks: a sparse raw copy made with ``qemu-img``.

The copy is made only for a disk that is one self-contained file: a
backing file, an external data file or vmdk extents elsewhere would make
``qemu-img`` read this machine's files into the copy (and their content
into the report). The disk's virtual size must fit the limit and the free
space of the temporary folder. Paths are handed over absolute, so that no
name is read as a protocol (``json:``, ``nbd:``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from feeds.policy.model import PolicyLimits

CONVERTIBLE = ("qcow2", "vmdk", "vdi", "vhd", "vhdx")
_FORMATS = {"vhd": "vpc"}


def convert_to_raw(image: Path, kind: str, folder: Path, limits: PolicyLimits) -> Path:
    """A sparse raw copy of the disk in ``folder``; OSError says why there is none."""
    tool = shutil.which("qemu-img")
    if tool is None:
        raise FileNotFoundError("qemu-img")
    source = image.resolve()
    fmt = _FORMATS.get(kind, kind)
    info = _info(tool, source, fmt, limits)
    _refuse_references(info, source)
    virtual = info.get("virtual-size")
    if not isinstance(virtual, int) or virtual <= 0:
        raise OSError("qemu-img did not report the disk's size")
    if virtual > limits.max_disk_bytes:
        raise OSError(
            f"the disk's virtual size ({virtual} bytes) is above the limit of "
            f"{limits.max_disk_bytes} bytes"
        )
    free = shutil.disk_usage(folder).free
    if virtual > free:
        raise OSError(
            f"the raw copy needs up to {virtual} bytes; {folder} has {free} free "
            "(set TMPDIR to a larger folder)"
        )
    raw = folder / "disk.raw"
    _run([tool, "convert", "-f", fmt, "-O", "raw", os.fspath(source), os.fspath(raw)], limits)
    return raw


def _info(tool: str, source: Path, fmt: str, limits: PolicyLimits) -> dict[str, Any]:
    output = _run([tool, "info", "--output=json", "-f", fmt, os.fspath(source)], limits)
    try:
        info = json.loads(output)
    except ValueError as exc:
        raise OSError("qemu-img info printed no JSON") from exc
    if not isinstance(info, dict):
        raise OSError("qemu-img info printed no JSON object")
    return info


def _refuse_references(info: dict[str, Any], source: Path) -> None:
    if info.get("backing-filename") or info.get("full-backing-filename"):
        raise OSError("the disk names a backing file; only self-contained disks are read")
    specific = info.get("format-specific")
    data = specific.get("data") if isinstance(specific, dict) else None
    if not isinstance(data, dict):
        return
    if data.get("data-file") or data.get("data-file-raw"):
        raise OSError("the disk keeps its data in another file; only one-file disks are read")
    for extent in data.get("extents") or []:
        name = extent.get("filename") if isinstance(extent, dict) else None
        if name is None or Path(name).resolve() != source:
            raise OSError("the disk names extent files of its own; only one-file disks are read")


def _run(command: list[str], limits: PolicyLimits) -> bytes:
    try:
        done = subprocess.run(  # noqa: S603 - an argument list of our own paths
            command, capture_output=True, timeout=limits.tool_timeout, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise OSError(f"qemu-img took longer than {limits.tool_timeout:g} s") from exc
    if done.returncode != 0:
        raise OSError(f"qemu-img failed: {done.stderr.decode(errors='replace').strip()[-300:]}")
    return done.stdout
