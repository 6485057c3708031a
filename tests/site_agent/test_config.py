"""The site's config.toml: the default that init writes, strict reading, hook edits, policies.

Unknown keys, wrong types and out-of-range values are errors that name the
key, so a typo never falls back to a default silently. `vmic hooks add` and
`vmic hooks remove` edit only the [[hooks]] tables and keep the admin's
comments. The approval policies built from the config close the file.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest

from federation.cli import main
from feeds.model import ImageEntry, image_id, sha512_hex
from keys.errors import ConfigError
from keys.limits import DEFAULT_LIMITS
from keys.trust import CrlPolicy
from site_agent import admin
from site_agent.approval import (
    AnyOf,
    ApprovalPolicy,
    ApproveAll,
    HoldForAdmin,
    SubscriptionSaysAuto,
    site_policy,
)
from site_agent.config import (
    DEFAULT_TRUST,
    EVENT_TYPES,
    Hook,
    SiteConfig,
    load,
    make_hook,
    write_default,
)
from site_agent.config_edit import add_hook, remove_hook
from site_agent.home import SiteHome
from site_agent.records import Subscription
from tests.support.ca import TestCA, write_trust_dir

ADMIN_COMMENT = "# ticket 4711: the storage team wants withdrawn images kept a week  \n"


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "config.toml"
    write_default(path, trust=Path("/etc/vmic/trust"))
    return path


def _edit(path: Path, old: str, new: str) -> bytes:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    return path.read_bytes()


def _refused(path: Path) -> ConfigError:
    """The ConfigError that loading ``path`` raises; loading never changes the file."""
    before = path.read_bytes()
    with pytest.raises(ConfigError) as caught:
        load(path)
    assert path.read_bytes() == before
    return caught.value


def _hook(name: str = "glance", events: tuple[str, ...] = ("image.available",)) -> Hook:
    return make_hook(
        name=name,
        events=list(events),
        command=["/usr/local/bin/vmic-glance", "--cloud"],
        timeout=30,
    )


# -- the default ------------------------------------------------------------------------


def test_the_default_config_written_by_init_loads(tmp_path: Path) -> None:
    home = SiteHome(tmp_path / "site")
    admin.init_site(home, trust=None)

    config = load(home.config)

    assert config.trust_dir == Path(DEFAULT_TRUST)
    assert config.crl is CrlPolicy.REQUIRE
    assert config.approval == "hold"
    assert config.expired_retention == timedelta(days=7)
    assert config.ca_bundle is None
    assert config.limits == DEFAULT_LIMITS
    assert config.event_max_attempts == 5
    assert config.hooks == ()


def test_the_default_config_keeps_the_trust_directory_given(config: Path) -> None:
    assert load(config).trust_dir == Path("/etc/vmic/trust")


@pytest.mark.parametrize(
    "trust",
    ['/etc/grid "security"', "/srv/grid\\security", "/srv/trust\\new"],
    ids=["double-quote", "backslash", "backslash-n"],
)
def test_the_default_config_keeps_a_trust_directory_with_quotes_or_backslashes(
    tmp_path: Path, trust: str
) -> None:
    path = tmp_path / "config.toml"
    write_default(path, trust=Path(trust))

    assert str(load(path).trust_dir) == trust


def test_a_config_with_every_key_set_loads(config: Path) -> None:
    _edit(config, 'crl = "require"', 'crl = "if-present"')
    _edit(config, 'default = "hold"', 'default = "auto"')
    _edit(config, "expired_retention_days = 7", "expired_retention_days = 1.5")
    _edit(config, '# ca_bundle = "/etc/pki', 'ca_bundle = "/etc/pki')
    _edit(config, "fetch_concurrency = 8", "fetch_concurrency = 3")
    _edit(config, "download_deadline_hours = 6", "download_deadline_hours = 0.5")
    _edit(config, "retries = 2", "retries = 0")
    _edit(config, "max_attempts = 5", "max_attempts = 9")

    loaded = load(config)

    assert loaded.crl is CrlPolicy.IF_PRESENT
    assert loaded.approval == "auto"
    assert loaded.expired_retention == timedelta(days=1.5)
    assert loaded.ca_bundle == Path("/etc/pki/tls/certs/ca-bundle.crt")
    assert loaded.limits.fetch_concurrency == 3
    assert loaded.limits.download_deadline == timedelta(minutes=30)
    assert loaded.limits.retries == 0
    assert loaded.event_max_attempts == 9


# -- strict reading -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new", "named"),
    [
        ("[cache]", "[caches]", "unknown tables: caches"),
        ("[events]", "[event]", "unknown tables: event"),
        ("[cache]", "[cache]\nsize_gb = 100", "[cache] has unknown keys: size_gb"),
        ("crl = ", "crls = ", "[trust] has unknown keys: crls"),
        ("retries = 2", "retry = 2", "[network] has unknown keys: retry"),
        ("[approval]\n", "approval = 1\n[approvals]\n", "unknown tables: approvals"),
    ],
)
def test_load_refuses_unknown_tables_and_keys_naming_them(
    config: Path, old: str, new: str, named: str
) -> None:
    _edit(config, old, new)

    assert named in _refused(config).message


@pytest.mark.parametrize(
    ("old", "new", "named"),
    [
        ('crl = "require"', "crl = 1", "crl"),
        ('directory = "/etc/vmic/trust"', 'directory = ["/etc/vmic/trust"]', "directory"),
        ('default = "hold"', "default = false", "default"),
        ("retries = 2", 'retries = "2"', "retries"),
        ("retries = 2", "retries = true", "retries"),
        ('# ca_bundle = "/etc/pki/tls/certs/ca-bundle.crt"', "ca_bundle = 1", "ca_bundle"),
        ("expired_retention_days = 7", 'expired_retention_days = "seven"', "expired_retention"),
        ("fetch_concurrency = 8", "fetch_concurrency = true", "fetch_concurrency"),
        ("max_attempts = 5", "max_attempts = [5]", "max_attempts"),
    ],
)
def test_load_refuses_a_value_of_the_wrong_type_naming_the_key(
    config: Path, old: str, new: str, named: str
) -> None:
    _edit(config, old, new)

    assert named in _refused(config).message


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("cache = 3\n", "[cache] must be a table"),
        ('hooks = "glance"\n', "hooks must be an array"),
        ("hooks = [1]\n", "each [[hooks]] entry must be a table"),
    ],
)
def test_load_refuses_a_table_of_the_wrong_type(tmp_path: Path, text: str, named: str) -> None:
    path = tmp_path / "config.toml"
    path.write_text(text)

    assert named in _refused(path).message


@pytest.mark.parametrize(
    ("old", "new", "named"),
    [
        ('crl = "require"', 'crl = "optional"', "crl"),
        ('crl = "require"', 'crl = "Require"', "crl"),
        ('default = "hold"', 'default = "approve"', "default"),
    ],
)
def test_load_refuses_unknown_crl_and_approval_policies(
    config: Path, old: str, new: str, named: str
) -> None:
    _edit(config, old, new)

    error = _refused(config)

    assert named in error.message
    assert new.split(" = ")[1].strip('"') in error.message


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("expired_retention_days = 7", "expired_retention_days = 0"),
        ("fetch_concurrency = 8", "fetch_concurrency = -1"),
        ("read_timeout_seconds = 30", "read_timeout_seconds = 0.0"),
        ("max_list_bytes = 16777216", "max_list_bytes = -16777216"),
        ("max_list_entries = 10000", "max_list_entries = 0"),
        ("verify_concurrency = 2", "verify_concurrency = 0"),
        ("max_attempts = 5", "max_attempts = 0"),
    ],
)
def test_load_refuses_a_value_that_must_be_positive(config: Path, old: str, new: str) -> None:
    _edit(config, old, new)

    error = _refused(config)

    assert "must be a" in error.message  # "finite number above 0" or "whole number of at least 1"
    assert new.split(" = ", maxsplit=1)[0] in error.message


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("expired_retention_days = 7", "expired_retention_days = inf"),
        ("download_deadline_hours = 6", "download_deadline_hours = nan"),
        ("max_attempts = 5", "max_attempts = nan"),
    ],
)
def test_load_refuses_infinite_or_nan_numbers_naming_the_key(
    config: Path, old: str, new: str
) -> None:
    _edit(config, old, new)

    assert new.split(" = ", maxsplit=1)[0] in _refused(config).message


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("fetch_concurrency = 8", "fetch_concurrency = 0.5"),
        ("download_concurrency = 2", "download_concurrency = 0.9"),
    ],
)
def test_load_refuses_a_concurrency_that_would_round_down_to_zero(
    config: Path, old: str, new: str
) -> None:
    # int(0.5) == 0: an asyncio.Semaphore(0) in sync would wait for ever.
    _edit(config, old, new)

    assert new.split(" = ", maxsplit=1)[0] in _refused(config).message


def test_load_refuses_a_negative_number_of_retries(config: Path) -> None:
    # retries = -1 leaves transport.with_retries no attempt at all.
    _edit(config, "retries = 2", "retries = -1")

    assert "retries" in _refused(config).message


def test_load_refuses_text_that_is_not_toml(config: Path) -> None:
    _edit(config, "[cache]", "[cache")

    assert "not valid TOML" in _refused(config).message


def test_load_reports_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read configuration"):
        load(tmp_path / "none.toml")


# -- hooks in the config -------------------------------------------------------------------


def test_load_reads_the_hooks_tables(config: Path) -> None:
    with config.open("a") as handle:
        handle.write(
            '\n[[hooks]]\nname = "glance"\non = ["image.available", "image.withdrawn"]\n'
            'command = ["/usr/local/bin/vmic-glance", "--cloud", "site1"]\n'
            'timeout_seconds = 120\n\n[[hooks]]\nname = "all"\non = ["*"]\n'
            'command = ["/usr/bin/logger"]\n'
        )

    hooks = load(config).hooks

    assert hooks == (
        Hook(
            name="glance",
            events=("image.available", "image.withdrawn"),
            command=("/usr/local/bin/vmic-glance", "--cloud", "site1"),
            timeout=120.0,
        ),
        Hook(name="all", events=("*",), command=("/usr/bin/logger",), timeout=300.0),
    )


@pytest.mark.parametrize(
    ("table", "named"),
    [
        ('name = "a"\non = ["*"]\ncommand = ["bin/x"]', "absolute path"),
        ('name = "a"\non = ["image.exploded"]\ncommand = ["/bin/x"]', "events must be among"),
        ('name = "a b"\non = ["*"]\ncommand = ["/bin/x"]', "hook name"),
        ('on = ["*"]\ncommand = ["/bin/x"]', "hook name"),
        ('name = "a"\non = ["*"]\ncommand = "/bin/x"', "command: expected list"),
        ('name = "a"\non = ["*"]\ncommand = ["/bin/x"]\ntimeout_seconds = 0', "timeout_seconds"),
        ('name = "a"\non = ["*"]\ncommand = ["/bin/x"]\nshell = true', "unknown keys: shell"),
    ],
)
def test_load_refuses_a_bad_hook_table(config: Path, table: str, named: str) -> None:
    with config.open("a") as handle:
        handle.write(f"\n[[hooks]]\n{table}\n")

    assert named in _refused(config).message


def test_load_refuses_two_hooks_with_the_same_name(config: Path) -> None:
    with config.open("a") as handle:
        for _ in range(2):
            handle.write('\n[[hooks]]\nname = "a"\non = ["*"]\ncommand = ["/bin/true"]\n')

    assert "two hooks share a name" in _refused(config).message


def test_make_hook_accepts_a_valid_hook() -> None:
    hook = make_hook(name="glance.v2_x-1", events=["*"], command=["/bin/true", "--x"], timeout=0.5)

    assert hook == Hook(
        name="glance.v2_x-1", events=("*",), command=("/bin/true", "--x"), timeout=0.5
    )


@pytest.mark.parametrize("command", [["glance"], ["./glance"], ["bin/glance", "/abs"]])
def test_make_hook_refuses_a_relative_command(command: list[str]) -> None:
    with pytest.raises(ConfigError, match="absolute path") as caught:
        make_hook(name="glance", events=["*"], command=command, timeout=30)

    assert "PATH" in caught.value.hint


@pytest.mark.parametrize("command", [[], [""], ["/bin/true", ""], ["/bin/true", 3]])
def test_make_hook_refuses_an_empty_or_non_string_command(command: list[object]) -> None:
    with pytest.raises(ConfigError, match="non-empty list of strings"):
        make_hook(name="glance", events=["*"], command=command, timeout=30)


@pytest.mark.parametrize(
    "events", [[], ["image.exploded"], ["image.new", "IMAGE.NEW"], ["all"], [1]]
)
def test_make_hook_refuses_unknown_events(events: list[object]) -> None:
    with pytest.raises(ConfigError, match="events must be among"):
        make_hook(name="glance", events=events, command=["/bin/true"], timeout=30)


@pytest.mark.parametrize(
    "name", ["", "-glance", ".hidden", "a b", "../etc", "a/b", "x" * 65, "glance\n", "é"]
)
def test_make_hook_refuses_bad_names(name: str) -> None:
    with pytest.raises(ConfigError, match="hook name"):
        make_hook(name=name, events=["*"], command=["/bin/true"], timeout=30)


@pytest.mark.parametrize("timeout", [0, -1, -0.5])
def test_make_hook_refuses_a_timeout_that_is_not_positive(timeout: float) -> None:
    with pytest.raises(ConfigError, match="timeout must be positive"):
        make_hook(name="glance", events=["*"], command=["/bin/true"], timeout=timeout)


def test_hook_wants_its_events_or_every_event_with_a_star() -> None:
    some = _hook(events=("image.available", "image.withdrawn"))
    every = _hook(events=("*",))

    assert some.wants("image.available")
    assert some.wants("image.withdrawn")
    assert not some.wants("image.new")
    assert not some.wants("*.available")
    assert all(every.wants(event) for event in EVENT_TYPES)


# -- hooks add / remove ----------------------------------------------------------------------


def test_add_hook_then_remove_hook_keep_the_admins_comment_byte_for_byte(config: Path) -> None:
    original = _edit(config, "[cache]\n", "[cache]\n" + ADMIN_COMMENT)

    add_hook(config, _hook("glance"))
    added = config.read_bytes()
    add_hook(config, _hook("mail", ("*",)))
    remove_hook(config, "glance")
    remove_hook(config, "mail")

    assert ADMIN_COMMENT.encode() in added
    assert load(config).hooks == ()
    assert config.read_bytes() == original
    assert config.stat().st_mode & 0o777 == 0o640


def test_add_hook_writes_a_hook_that_loads_back(config: Path) -> None:
    add_hook(config, _hook("glance"))
    add_hook(config, _hook("mail", ("image.new", "list.rejected")))

    assert load(config).hooks == (_hook("glance"), _hook("mail", ("image.new", "list.rejected")))


def test_add_hook_refuses_a_duplicate_name_and_leaves_the_file_unchanged(config: Path) -> None:
    add_hook(config, _hook("glance"))
    before = config.read_bytes()

    with pytest.raises(ConfigError, match="a hook named glance exists already"):
        add_hook(config, _hook("glance", ("*",)))

    assert config.read_bytes() == before


def test_add_hook_refuses_to_edit_an_invalid_config_and_leaves_it_unchanged(
    config: Path,
) -> None:
    before = _edit(config, "retries = 2", "retries = two")

    with pytest.raises(ConfigError):
        add_hook(config, _hook("glance"))

    assert config.read_bytes() == before


def test_remove_hook_refuses_an_unknown_name_and_leaves_the_file_unchanged(
    config: Path,
) -> None:
    add_hook(config, _hook("glance"))
    before = config.read_bytes()

    with pytest.raises(ConfigError, match="no hook named mail"):
        remove_hook(config, "mail")

    assert config.read_bytes() == before


def test_remove_hook_keeps_the_other_hooks(config: Path) -> None:
    add_hook(config, _hook("glance"))
    add_hook(config, _hook("mail", ("*",)))

    remove_hook(config, "glance")

    assert load(config).hooks == (_hook("mail", ("*",)),)


# -- approval policies (built from the config) ------------------------------------------------


def _entry(now: datetime) -> ImageEntry:
    return ImageEntry(
        id=image_id("00000000-0000-4000-8000-000000000001"),
        title="Image 1",
        summary="a test image",
        url="https://images.example.org/1.qcow2",
        size=1001,
        sha512=sha512_hex("a" * 128),
        format="qcow2",
        updated=now,
        endorsed=now,
    )


def _subscription(now: datetime, *, auto: bool) -> Subscription:
    return Subscription(
        name="egi",
        url="https://lists.example.org/egi.atom",
        list_id="6f2a7a52-2a36-4c57-9c52-3c1f5d1f3d51",
        self_url="https://lists.example.org/egi.atom",
        pins=(),
        auto_approve=auto,
        created=now,
    )


def _decisions(policy: ApprovalPolicy, now: datetime) -> tuple[bool, bool]:
    """What the policy says for a plain subscription and for an --auto-approve one."""
    entry = _entry(now)
    return (
        policy.approves(entry, subscription=_subscription(now, auto=False)),
        policy.approves(entry, subscription=_subscription(now, auto=True)),
    )


def test_hold_for_admin_approves_nothing(now: datetime) -> None:
    assert _decisions(HoldForAdmin(), now) == (False, False)


def test_approve_all_approves_everything(now: datetime) -> None:
    assert _decisions(ApproveAll(), now) == (True, True)


def test_subscription_says_auto_follows_the_subscription(now: datetime) -> None:
    assert _decisions(SubscriptionSaysAuto(), now) == (False, True)


def test_any_of_approves_when_one_policy_does(now: datetime) -> None:
    assert _decisions(AnyOf([HoldForAdmin(), SubscriptionSaysAuto()]), now) == (False, True)
    assert _decisions(AnyOf([HoldForAdmin(), ApproveAll()]), now) == (True, True)
    assert _decisions(AnyOf([]), now) == (False, False)
    assert AnyOf([HoldForAdmin(), ApproveAll()]).describe() == (
        "hold for the admin or approve automatically"
    )


def _site_config(config: Path, policy: str) -> SiteConfig:
    _edit(config, 'default = "hold"', f'default = "{policy}"')
    return load(config)


def test_site_policy_hold_approves_only_auto_approve_subscriptions(
    config: Path, now: datetime
) -> None:
    policy = site_policy(_site_config(config, "hold"))

    assert _decisions(policy, now) == (False, True)
    assert "hold for the admin" in policy.describe()


def test_site_policy_auto_approves_every_subscription(config: Path, now: datetime) -> None:
    policy = site_policy(_site_config(config, "auto"))

    assert _decisions(policy, now) == (True, True)
    assert "approve automatically" in policy.describe()


def test_init_stores_the_trust_directory_as_an_absolute_path_for_cron(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, root_ca: TestCA
) -> None:
    """`vmic site init --trust ca` in one folder; `vmic site check` (as cron would) in another."""
    write_trust_dir(tmp_path / "admin" / "ca", [root_ca])
    home = tmp_path / "home"
    monkeypatch.chdir(tmp_path / "admin")
    assert main(["site", "init", "--home", str(home), "--trust", "ca"]) == 0
    elsewhere = tmp_path / "cron"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)

    config = load(home / "config.toml")

    assert config.trust_dir == tmp_path / "admin" / "ca"
    assert (
        'directory = "' + str(tmp_path / "admin" / "ca") + '"' in (home / "config.toml").read_text()
    )
    assert main(["site", "check", "--home", str(home)]) == 0


def test_a_relative_path_written_in_the_config_is_taken_from_the_site_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "home" / "config.toml"
    path.parent.mkdir()
    write_default(path, trust=None)
    text = path.read_text().replace(f'"{DEFAULT_TRUST}"', '"certificates"')
    text = text.replace(
        "[serve]\n", '[serve]\ntls_cert = "tls/cert.pem"\ntls_key = "/etc/tls/key.pem"\n'
    )
    path.write_text(text)
    monkeypatch.chdir(tmp_path)

    config = load(path)

    assert config.trust_dir == tmp_path / "home" / "certificates"
    assert config.serve.tls_cert == tmp_path / "home" / "tls" / "cert.pem"
    assert config.serve.tls_key == Path("/etc/tls/key.pem")
