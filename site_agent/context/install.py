"""The in-image side: the boot script and two systemd units, written into an image tree.

``vmic context install --root DIR`` writes, under DIR::

    usr/libexec/vmic-context                                   the script (0755)
    etc/systemd/system/vmic-context-prolog.service             before network-pre.target
    etc/systemd/system/vmic-context-epilog.service             after network-online.target
    etc/systemd/system/multi-user.target.wants/vmic-context-*.service
                                                               relative links: enabled

The files ship in this package (:func:`script_text`, :func:`unit_text`), so
what the docs and tests read is what an image gets. Writing is idempotent
(same bytes, same result; a file already right is left alone) and each file
is replaced atomically. A folder on the way that is a symbolic link is
followed only if it resolves inside DIR; one that points outside DIR (to
the build host's own /etc, say) stops the install with nothing written
through it.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path, PurePosixPath

from keys.errors import ConfigError
from keys.fileio import fsync_dir

SCRIPT_NAME = "vmic-context.sh"
SCRIPT_PATH = PurePosixPath("usr/libexec/vmic-context")
UNIT_DIR = PurePosixPath("etc/systemd/system")
UNITS = ("vmic-context-prolog.service", "vmic-context-epilog.service")
WANTS = UNIT_DIR / "multi-user.target.wants"


@dataclass(frozen=True, slots=True, kw_only=True)
class Installed:
    """One path under the root and what was done to it: ``written``, ``linked`` or ``unchanged``."""

    path: PurePosixPath
    action: str


def _package_text(name: str) -> str:
    return resources.files("site_agent.context").joinpath(name).read_text(encoding="utf-8")


def script_text() -> str:
    """The in-image boot script (POSIX sh)."""
    return _package_text(SCRIPT_NAME)


def unit_text(name: str) -> str:
    if name not in UNITS:
        raise ValueError(name)
    return _package_text(name)


def install(root: Path) -> tuple[Installed, ...]:
    """Write the script, the units and their enablement links under ``root``."""
    if not root.is_dir():
        raise ConfigError(
            f"{root} is not a folder", hint="give the root of the image tree, e.g. --root ./rootfs"
        )
    real_root = root.resolve()
    done = [_write(real_root, SCRIPT_PATH, script_text().encode(), 0o755)]
    for unit in UNITS:
        done.append(_write(real_root, UNIT_DIR / unit, unit_text(unit).encode(), 0o644))
    for unit in UNITS:
        done.append(_link(real_root, WANTS / unit, f"../{unit}"))
    return tuple(done)


def _folder(root: Path, relative: PurePosixPath) -> Path:
    """``root/relative``, created as needed; every symbolic link on the way must stay in root."""
    current = root
    for part in relative.parts:
        step = current / part
        if step.is_symlink():
            target = step.resolve()
            if not target.is_relative_to(root):
                raise ConfigError(
                    f"{step} is a symbolic link to {target}, outside {root}",
                    hint="an absolute link in an image tree points into the build host; "
                    "make it relative, or install into the image mounted at its own root",
                )
            step = target
        if not step.exists():
            try:
                step.mkdir(mode=0o755)
            except OSError as exc:
                raise ConfigError(f"cannot create {step}: {exc.strerror}") from exc
        elif not step.is_dir():
            raise ConfigError(f"{step} is in the way: it is not a folder")
        current = step
    return current


def _write(root: Path, relative: PurePosixPath, data: bytes, mode: int) -> Installed:
    folder = _folder(root, relative.parent)
    path = folder / relative.name
    if path.is_symlink() and not path.resolve().is_relative_to(root):
        if path.resolve() == Path(os.devnull):
            raise ConfigError(
                f"{path} links to {os.devnull}: the unit is masked in this image",
                hint="unmask it (remove the link) if the image should run the CD",
            )
        raise ConfigError(
            f"{path} is a symbolic link out of {root}; remove it first",
            hint="vmic context install does not write through links that leave the image",
        )
    if not path.is_symlink() and path.is_file():
        current = path.read_bytes()
        if current == data and (path.stat().st_mode & 0o7777) == mode:
            return Installed(path=relative, action="unchanged")
    fd, tmp_name = tempfile.mkstemp(dir=folder, prefix=f".{relative.name}.")
    tmp = Path(tmp_name)
    try:
        try:
            os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        tmp.replace(path)  # replaces a link itself, never what it points to
        fsync_dir(folder)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ConfigError(f"cannot write {path}: {exc.strerror}") from exc
    return Installed(path=relative, action="written")


def _link(root: Path, relative: PurePosixPath, target: str) -> Installed:
    folder = _folder(root, relative.parent)
    path = folder / relative.name
    if path.is_symlink() and str(path.readlink()) == target:
        return Installed(path=relative, action="unchanged")
    if path.exists() and not path.is_symlink():
        raise ConfigError(f"{path} is in the way: it should be a link to {target}")
    tmp = folder / f".{relative.name}.vmic-link"
    try:
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(target)
        tmp.replace(path)
        fsync_dir(folder)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ConfigError(f"cannot link {path}: {exc.strerror}") from exc
    return Installed(path=relative, action="linked")
