"""Hook commands run for events: no shell, the event in VMIC_* and on stdin, a timeout.

THREATS 24 ("nothing from metadata reaches a shell"): values from a list
arrive in the hook's environment and JSON byte for byte, and shell
metacharacters in them are never interpreted. Nor can a list's size keep a
hook from starting: past the caps of :mod:`site_agent.hook_env` the
environment is cut (``VMIC_TRUNCATED`` says what) and stdin still carries
the whole event. Every hook here is a real script in ``tmp_path`` run as a
real subprocess.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from site_agent.config import Hook, make_hook
from site_agent.hook_env import MAX_EVENT_BYTES, MAX_VALUE_BYTES, TRUNCATED, capped
from site_agent.hooks import (
    HookOutcome,
    event_environment,
    event_json,
    hook_environment,
    run_hook,
)
from site_agent.records import EventRecord

IMAGE = "00000000-0000-4000-8000-000000000001"
BASE_ENV = {"PATH": "/usr/bin:/bin", "LC_ALL": "C"}


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


def _script(folder: Path, name: str, body: str) -> Path:
    path = folder / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


def _hook(command: Path | str, *args: str, timeout: float = 10) -> Hook:
    return make_hook(name="test", events=["*"], command=[str(command), *args], timeout=timeout)


def _event(now: datetime, **data: object) -> EventRecord:
    return EventRecord(
        id=42,
        at=now,
        type="image.available",
        subscription="egi",
        image_id=IMAGE,
        data=dict(data),
    )


def _dumping_hook(tmp_path: Path) -> tuple[Hook, Path, Path]:
    """A hook that writes its environment (NUL-separated) and its stdin to files."""
    env_file, stdin_file = tmp_path / "env.bin", tmp_path / "stdin.json"
    script = _script(tmp_path, "dump", f'env -0 > "{env_file}"\ncat > "{stdin_file}"\necho done\n')
    return _hook(script), env_file, stdin_file


def _vmic_env(env_file: Path) -> dict[str, str]:
    pairs = [item.split("=", 1) for item in env_file.read_text().split("\0") if item]
    return {key: value for key, value in pairs if key.startswith("VMIC_")}


def test_the_hook_gets_the_event_in_vmic_variables_and_as_json_on_stdin(
    tmp_path: Path, home: Path, now: datetime
) -> None:
    hook, env_file, stdin_file = _dumping_hook(tmp_path)
    event = _event(
        now,
        title="CentOS 9 (x86_64)",
        size=123456,
        ratio=0.5,
        shareable=True,
        expired=False,
        **{"os-name": "CentOS", "vo": "biomed"},
        tags=["a", "b"],
        nested={"x": 1},
        reason=None,
    )

    outcome = run_hook(hook, event, home=str(home), base_env=BASE_ENV)

    assert outcome == HookOutcome(ok=True)
    assert _vmic_env(env_file) == {
        "VMIC_EVENT": "image.available",
        "VMIC_EVENT_ID": "42",
        "VMIC_EVENT_TIME": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "VMIC_HOME": str(home),
        "VMIC_IMAGE_ID": IMAGE,
        "VMIC_SUBSCRIPTION": "egi",
        "VMIC_TITLE": "CentOS 9 (x86_64)",
        "VMIC_SIZE": "123456",
        "VMIC_RATIO": "0.5",
        "VMIC_SHAREABLE": "1",
        "VMIC_EXPIRED": "0",
        "VMIC_OS_NAME": "CentOS",
        "VMIC_VO": "biomed",
    }
    payload = json.loads(stdin_file.read_bytes())
    assert payload == event_json(event)
    assert payload["data"]["tags"] == ["a", "b"]
    assert payload["data"]["nested"] == {"x": 1}


def test_the_hook_runs_in_the_site_home_with_the_agents_environment(
    tmp_path: Path, home: Path, now: datetime
) -> None:
    where = tmp_path / "where"
    script = _script(tmp_path, "pwd", f'pwd > "{where}"\necho "$PATH" >> "{where}"\n')

    outcome = run_hook(_hook(script), _event(now), home=str(home), base_env=BASE_ENV)

    assert outcome.ok
    assert where.read_text().splitlines() == [str(home), BASE_ENV["PATH"]]


def test_an_event_without_subscription_or_image_sets_no_such_variables(now: datetime) -> None:
    event = EventRecord(
        id=1, at=now, type="list.expired", subscription=None, image_id=None, data={}
    )

    env = event_environment(event, home="/srv/vmic")

    assert env == {
        "VMIC_EVENT": "list.expired",
        "VMIC_EVENT_ID": "1",
        "VMIC_EVENT_TIME": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "VMIC_HOME": "/srv/vmic",
    }


HOSTILE = [
    "$(touch {canary})",
    "`touch {canary}`",
    "; touch {canary}",
    "x && touch {canary} || touch {canary}",
    "| touch {canary}",
    "'\"; touch {canary}; echo \"'",
    "line one\ntouch {canary}\n",
    "${{IFS}}touch${{IFS}}{canary}",
    "; rm -rf {victim}",
]


def test_shell_metacharacters_in_metadata_arrive_verbatim_and_run_nothing(
    tmp_path: Path, home: Path, now: datetime
) -> None:
    canary = tmp_path / "canary"
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep").write_text("still here")
    values = {
        f"field_{n}": value.format(canary=canary, victim=victim) for n, value in enumerate(HOSTILE)
    }
    hook, env_file, stdin_file = _dumping_hook(tmp_path)
    event = _event(now, title=values["field_0"], **values)

    outcome = run_hook(hook, event, home=str(home), base_env=BASE_ENV)

    assert outcome.ok
    assert not canary.exists()
    assert (victim / "keep").read_text() == "still here"
    env = _vmic_env(env_file)
    for key, value in values.items():
        assert env[f"VMIC_{key.upper()}"] == value
    assert env["VMIC_TITLE"] == values["field_0"]
    assert json.loads(stdin_file.read_bytes())["data"] == {**values, "title": values["field_0"]}


def test_a_hostile_value_in_a_hook_argument_is_one_argument_not_a_command(
    tmp_path: Path, home: Path, now: datetime
) -> None:
    canary = tmp_path / "canary"
    args_file = tmp_path / "args.txt"
    script = _script(tmp_path, "print-args", f'printf "%s\\n" "$#" "$1" > "{args_file}"\n')
    hostile = f"a b; touch {canary} $(touch {canary})"

    outcome = run_hook(_hook(script, hostile), _event(now), home=str(home), base_env=BASE_ENV)

    assert outcome.ok
    assert args_file.read_text() == f"1\n{hostile}\n"
    assert not canary.exists()


def test_a_non_zero_exit_fails_with_the_status_and_the_last_line_of_output(
    tmp_path: Path, home: Path, now: datetime
) -> None:
    script = _script(
        tmp_path,
        "fails",
        "cat > /dev/null\necho 'connecting to glance'\necho 'glance: quota exceeded' >&2\nexit 3\n",
    )

    outcome = run_hook(_hook(script), _event(now), home=str(home), base_env=BASE_ENV)

    assert outcome == HookOutcome(ok=False, error="exit status 3: glance: quota exceeded")


def test_a_silent_failure_reports_only_the_exit_status(
    tmp_path: Path, home: Path, now: datetime
) -> None:
    script = _script(tmp_path, "silent", "exit 7\n")

    outcome = run_hook(_hook(script), _event(now), home=str(home), base_env=BASE_ENV)

    assert outcome == HookOutcome(ok=False, error="exit status 7")


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting for its reaper counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in {"Z", "X"}


def test_a_hook_that_outlives_its_timeout_is_killed_with_its_children(
    tmp_path: Path, home: Path, now: datetime
) -> None:
    child_pid = tmp_path / "child.pid"
    marker = tmp_path / "late"
    script = _script(
        tmp_path,
        "slow",
        f'sleep 30 &\necho $! > "{child_pid}"\nsleep 30\ntouch "{marker}"\n',
    )
    started = time.monotonic()

    outcome = run_hook(_hook(script, timeout=0.5), _event(now), home=str(home), base_env=BASE_ENV)

    elapsed = time.monotonic() - started
    assert outcome == HookOutcome(ok=False, error="timed out after 0.5 s")
    assert 0.5 <= elapsed < 5
    pid = int(child_pid.read_text())
    deadline = time.monotonic() + 3
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not _alive(pid), f"the hook's child sleep (pid {pid}) survived the timeout"
    assert not marker.exists()


def test_a_missing_command_cannot_start(tmp_path: Path, home: Path, now: datetime) -> None:
    missing = tmp_path / "no-such-hook"

    outcome = run_hook(_hook(missing), _event(now), home=str(home), base_env=BASE_ENV)

    assert not outcome.ok
    assert outcome.error == f"cannot start {missing}: No such file or directory"
    assert not missing.exists()


def test_a_command_that_is_not_executable_cannot_start(
    tmp_path: Path, home: Path, now: datetime
) -> None:
    script = _script(tmp_path, "not-executable", "exit 0\n")
    script.chmod(0o644)

    outcome = run_hook(_hook(script), _event(now), home=str(home), base_env=BASE_ENV)

    assert not outcome.ok
    assert outcome.error is not None
    assert outcome.error.startswith(f"cannot start {script}")


def test_a_hook_that_does_not_read_stdin_still_succeeds(
    tmp_path: Path, home: Path, now: datetime
) -> None:
    script = _script(tmp_path, "ignores-stdin", "exit 0\n")
    # Far more JSON than a pipe holds, so the write really hits a closed pipe.
    event = _event(now, tags=["x" * 1000] * 300)

    outcome = run_hook(_hook(script), event, home=str(home), base_env=BASE_ENV)

    assert outcome == HookOutcome(ok=True)


def test_run_hook_uses_the_process_environment_when_no_base_is_given(
    tmp_path: Path, home: Path, now: datetime, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VMIC_TEST_INHERITED", "yes")
    hook, env_file, _stdin = _dumping_hook(tmp_path)

    outcome = run_hook(hook, _event(now), home=str(home))

    assert outcome.ok
    assert _vmic_env(env_file)["VMIC_TEST_INHERITED"] == "yes"
    assert os.environ["VMIC_TEST_INHERITED"] == "yes"


# -- the environment's size: what a list may make too big for the kernel -------------------

MiB = 1024 * 1024


def _capturing_hook(tmp_path: Path, *, vmcatcher_env: bool = False) -> tuple[Hook, Path, Path]:
    """A Python hook that writes its environment (as JSON) and its stdin to files."""
    env_file, stdin_file = tmp_path / "env.json", tmp_path / "stdin.json"
    script = tmp_path / "capture.py"
    script.write_text(
        f"#!{sys.executable}\n"
        "import json, os, sys\n"
        f"open({str(env_file)!r}, 'w').write(json.dumps(dict(os.environ)))\n"
        f"open({str(stdin_file)!r}, 'wb').write(sys.stdin.buffer.read())\n"
    )
    script.chmod(0o755)
    events = ["image.new", "image.available"] if vmcatcher_env else ["*"]
    hook = make_hook(
        name="capture",
        events=events,
        command=[str(script)],
        timeout=30,
        vmcatcher_env=vmcatcher_env,
    )
    return hook, env_file, stdin_file


def _event_bytes(env: dict[str, str]) -> int:
    """What the event's variables take in the kernel's copy: NAME=value and a NUL each."""
    return sum(len(f"{n}={v}".encode()) + 1 for n, v in env.items() if n not in BASE_ENV)


@pytest.mark.parametrize("vmcatcher_env", [False, True], ids=["vmic", "vmcatcher"])
def test_a_huge_title_and_thousands_of_unread_keys_still_start_the_hook(
    tmp_path: Path, home: Path, now: datetime, vmcatcher_env: bool
) -> None:
    title = "Ü" + "x" * (MiB - 1)  # 1 MiB: alone 8 times what the kernel takes for one variable
    extra = {f"ad:key{n:04d}": f"{n:04d}" + "v" * 1020 for n in range(5000)}  # 5,000 KiB more
    sha512 = "ab" * 64
    hook, env_file, stdin_file = _capturing_hook(tmp_path, vmcatcher_env=vmcatcher_env)
    event = _event(now, title=title, summary="s" * 100, sha512=sha512, extra=extra)
    event = dataclasses.replace(event, type="image.new")

    outcome = run_hook(hook, event, home=str(home), base_env=BASE_ENV)

    assert outcome == HookOutcome(ok=True)
    env = json.loads(env_file.read_text())
    truncated = env[TRUNCATED].split(" ")
    assert truncated[0] == "VMIC_TITLE"
    assert "VMIC_X_AD_KEY4999" in truncated or truncated[-1] == "..."
    assert len(env["VMIC_TITLE"].encode()) == MAX_VALUE_BYTES
    assert title.startswith(env["VMIC_TITLE"])
    assert env["VMIC_SHA512"] == sha512  # short values stay whole
    assert env["VMIC_SUMMARY"] == "s" * 100
    assert env["VMIC_X_AD_KEY0000"] == extra["ad:key0000"]  # unread keys kept while they fit
    assert "VMIC_X_AD_KEY4999" not in env
    assert _event_bytes(env) <= MAX_EVENT_BYTES
    if vmcatcher_env:
        assert env["VMCATCHER_EVENT_TYPE"] == "ImageNew"
        assert env["VMCATCHER_EVENT_SL_CHECKSUM_SHA512"] == sha512
        assert title.startswith(env["VMCATCHER_EVENT_DC_TITLE"])
        assert "VMCATCHER_EVENT_DC_TITLE" in truncated
        assert "VMCATCHER_EVENT_AD_KEY4999" not in env
    payload = json.loads(stdin_file.read_bytes())  # the whole event is on stdin
    assert payload["data"]["title"] == title
    assert payload["data"]["extra"] == extra


def test_the_same_event_uncapped_would_not_even_start(tmp_path: Path, home: Path) -> None:
    """Why the caps exist: the kernel refuses one variable of 1 MiB (E2BIG)."""
    script = _script(tmp_path, "never", "exit 0\n")
    with pytest.raises(OSError, match="Argument list too long"):
        subprocess.run([str(script)], env={**BASE_ENV, "VMIC_TITLE": "x" * MiB}, check=False)


def test_a_normal_event_is_not_cut_and_has_no_truncated_variable(
    tmp_path: Path, home: Path, now: datetime
) -> None:
    hook, env_file, _stdin = _capturing_hook(tmp_path, vmcatcher_env=True)
    long_but_allowed = "é" * (MAX_VALUE_BYTES // 2)  # exactly MAX_VALUE_BYTES in UTF-8
    extra = {f"ad:key{n}": "v" * 100 for n in range(50)}
    event = _event(now, title=long_but_allowed, summary="A small image", extra=extra)
    base = {**BASE_ENV, TRUNCATED: "left over from the agent's own environment"}

    outcome = run_hook(hook, event, home=str(home), base_env=base)

    assert outcome.ok
    env = json.loads(env_file.read_text())
    assert TRUNCATED not in env
    assert env["VMIC_TITLE"] == long_but_allowed
    assert env["VMCATCHER_EVENT_DC_TITLE"] == long_but_allowed
    assert env["VMIC_SUMMARY"] == "A small image"
    for n in range(50):
        assert env[f"VMIC_X_AD_KEY{n}"] == "v" * 100
        assert env[f"VMCATCHER_EVENT_AD_KEY{n}"] == "v" * 100


def test_a_value_one_byte_too_long_is_cut_at_a_character_boundary(now: datetime) -> None:
    title = "a" + "é" * (MAX_VALUE_BYTES // 2)  # MAX_VALUE_BYTES + 1 bytes; é takes two
    hook = make_hook(name="h", events=["*"], command=["/bin/true"], timeout=5)

    env = hook_environment(hook, _event(now, title=title), home="/srv/vmic", base_env={})

    assert env["VMIC_TITLE"] == title[:-1]  # the last é would not fit whole
    assert env[TRUNCATED] == "VMIC_TITLE"


def test_vmcatchers_variables_stay_whole_while_vmics_copies_are_cut(now: datetime) -> None:
    """Long free text in many fields: vmic's copies give way; vmcatcher's, that its
    handlers read, stay as they are while they alone fit."""
    text = {key: key[0] * MAX_VALUE_BYTES for key in ("title", "summary", "url", "os")}
    more = {f"note{n}": "n" * MAX_VALUE_BYTES for n in range(12)}
    hook = make_hook(
        name="h", events=["image.new"], command=["/bin/true"], timeout=5, vmcatcher_env=True
    )
    event = dataclasses.replace(_event(now, **text, **more), type="image.new")

    env = hook_environment(hook, event, home="/srv/vmic", base_env={})

    for field, key in (("DC_TITLE", "title"), ("DC_DESCRIPTION", "summary"), ("HV_URI", "url")):
        assert env[f"VMCATCHER_EVENT_{field}"] == text[key]
    assert env["VMCATCHER_EVENT_SL_OS"] == text["os"]
    assert len(env["VMIC_TITLE"]) < MAX_VALUE_BYTES
    assert set(env[TRUNCATED].split()) >= {"VMIC_TITLE", "VMIC_NOTE0", "VMIC_NOTE11"}
    assert _event_bytes(env) <= MAX_EVENT_BYTES


def _variables(prefix: str, most: int) -> st.SearchStrategy[dict[str, str]]:
    """Variables whose values are runs of one character (1 to 4 bytes in UTF-8), any length."""
    value = st.builds(
        lambda char, count: char * count,
        st.sampled_from(["a", "é", "日", "\U0001f600"]),
        st.integers(0, 3 * MAX_VALUE_BYTES),
    )
    names = st.from_regex(r"[A-Z0-9_]{1,12}", fullmatch=True).map(lambda n: prefix + n)
    return st.dictionaries(names, value, max_size=most)


@pytest.mark.fuzz
@given(
    values=_variables("VMIC_", 30),
    kept=_variables("VMCATCHER_EVENT_", 20),
    extras=_variables("VMIC_X_", 60),
)
def test_capped_variables_fit_the_caps_and_say_what_was_cut(
    values: dict[str, str], kept: dict[str, str], extras: dict[str, str]
) -> None:
    fixed = {"VMIC_EVENT": "image.new", "VMIC_EVENT_ID": "7", "VMIC_HOME": "/var/lib/vmic"}
    values = {n: v for n, v in values.items() if n not in fixed}  # names are unique, as in
    extras = {n: v for n, v in extras.items() if n not in values}  # hook_environment

    env = capped(fixed=fixed, values=values, kept=kept, extras=extras)

    given_all = {**fixed, **values, **kept, **extras}
    shown = {name: value for name, value in env.items() if name != TRUNCATED}
    assert _event_bytes(env) <= MAX_EVENT_BYTES
    assert (TRUNCATED in env) == (shown != given_all)
    named = set(env.get(TRUNCATED, "").split())
    for name, value in given_all.items():
        if name in env:
            assert value.startswith(env[name])
            assert len(env[name].encode()) <= MAX_VALUE_BYTES or name in fixed
            assert (env[name] != value) == (name in named)
        else:
            assert name in extras  # only unread keys are ever left out
            assert name in named or env[TRUNCATED].endswith(" ...")
