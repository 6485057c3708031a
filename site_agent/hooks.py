"""Running a hook command for an event: no shell, a timeout, the event in env and on stdin.

A hook is an argument list (never a shell string; nothing from a list reaches
a shell). It runs in its own process group, in the site home, with the
agent's environment plus ``VMIC_*`` variables describing the event, and the
event as JSON on its standard input. A hook that exits 0 has taken the
event; anything else (non-zero exit, timeout, a command that cannot start)
is a failure that the sync records and retries on later runs.

A hook added with ``--vmcatcher-env`` also gets the ``VMCATCHER_*``
variables and event types of vmcatcher, so an existing vmcatcher handler
(glancepush and the like) runs unchanged.

The event's variables are bounded in size (:mod:`site_agent.hook_env`: a
long title or thousands of unread HEPiX keys would otherwise stop every hook
from starting, with ``E2BIG``); ``VMIC_TRUNCATED`` names what was cut, and
the JSON on standard input always carries the whole event.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from site_agent.config import Hook
from site_agent.hook_env import EXTRA_PREFIX, TRUNCATED, capped, env_name, extra_variables
from site_agent.records import EventRecord, iso
from site_agent.vmcatcher import vmcatcher_environment, vmcatcher_extra_variables

_OUTPUT_TAIL = 2000
_KILL_GRACE = 5.0
_BOOKKEEPING = ("VMIC_EVENT", "VMIC_EVENT_ID", "VMIC_EVENT_TIME", "VMIC_HOME")
"""vmic's own variables, never cut for size (the others carry the event's data)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class HookOutcome:
    ok: bool
    error: str | None = None


def event_json(event: EventRecord) -> dict[str, Any]:
    return {
        "id": event.id,
        "type": event.type,
        "at": iso(event.at),
        "subscription": event.subscription,
        "image_id": event.image_id,
        "data": event.data,
    }


def event_environment(event: EventRecord, *, home: str) -> dict[str, str]:
    """``VMIC_EVENT``, ``VMIC_EVENT_ID``, ``VMIC_EVENT_TIME``, ``VMIC_HOME`` and one
    ``VMIC_<KEY>`` per scalar in the event's data (``image_id`` -> ``VMIC_IMAGE_ID``)."""
    env = {
        "VMIC_EVENT": event.type,
        "VMIC_EVENT_ID": str(event.id),
        "VMIC_EVENT_TIME": iso(event.at) or "",
        "VMIC_HOME": home,
    }
    if event.subscription:
        env["VMIC_SUBSCRIPTION"] = event.subscription
    if event.image_id:
        env["VMIC_IMAGE_ID"] = event.image_id
    for key, value in event.data.items():
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            env[env_name("VMIC_", key)] = str(value)
        elif isinstance(value, bool):
            env[env_name("VMIC_", key)] = "1" if value else "0"
    return env


def hook_environment(
    hook: Hook, event: EventRecord, *, home: str, base_env: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Everything a hook's process gets: the agent's environment, the event's variables
    (and vmcatcher's, when the hook asks), then the list's unread keys where no variable
    is set already; the event's share within the caps of :func:`hook_env.capped`.
    Raises OSError when vmcatcher's cache links cannot be made."""
    env = dict(os.environ if base_env is None else base_env)
    env.pop(TRUNCATED, None)  # only this event may say it was cut
    values = event_environment(event, home=home)
    fixed = {name: values.pop(name) for name in _BOOKKEEPING}
    kept = vmcatcher_environment(event, home=home) if hook.vmcatcher_env else {}
    extras = extra_variables(event.data, EXTRA_PREFIX)
    if hook.vmcatcher_env:
        extras.update(vmcatcher_extra_variables(event))
    taken = env.keys() | values.keys() | kept.keys()
    extras = {name: value for name, value in extras.items() if name not in taken}
    env.update(capped(fixed=fixed, values=values, kept=kept, extras=extras))
    return env


def run_hook(
    hook: Hook, event: EventRecord, *, home: str, base_env: Mapping[str, str] | None = None
) -> HookOutcome:
    try:
        env = hook_environment(hook, event, home=home, base_env=base_env)
    except OSError as exc:
        return HookOutcome(ok=False, error=f"cannot link the image for vmcatcher: {exc.strerror}")
    payload = json.dumps(event_json(event), sort_keys=True).encode("utf-8")
    with tempfile.TemporaryFile() as output:
        try:
            process = subprocess.Popen(  # noqa: S603 - an argv list from config.toml, no shell
                list(hook.command),
                stdin=subprocess.PIPE,
                stdout=output,
                stderr=output,
                env=env,
                cwd=home,
                start_new_session=True,
                close_fds=True,
            )
        except OSError as exc:
            return HookOutcome(ok=False, error=f"cannot start {hook.command[0]}: {exc.strerror}")
        try:
            process.communicate(input=payload, timeout=hook.timeout)
        except subprocess.TimeoutExpired:
            _kill_group(process)
            return HookOutcome(ok=False, error=f"timed out after {hook.timeout:g} s")
        except BrokenPipeError:
            process.wait(timeout=hook.timeout)  # the hook did not read stdin; that is allowed
        if process.returncode == 0:
            return HookOutcome(ok=True)
        output.seek(max(0, output.seek(0, os.SEEK_END) - _OUTPUT_TAIL))
        tail = output.read().decode("utf-8", errors="replace").strip().splitlines()
        said = f": {tail[-1]}" if tail else ""
        return HookOutcome(ok=False, error=f"exit status {process.returncode}{said}")


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    try:
        process.wait(timeout=_KILL_GRACE)
    except subprocess.TimeoutExpired:
        process.kill()
