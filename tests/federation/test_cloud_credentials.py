"""A cloud's credentials never appear in vmic's output, site log or history.

The clouds.yaml entry here asks Keystone (on a loopback port where nothing
answers) with a password and an application credential secret; whatever
openstacksdk and keystoneauth make of it, `vmic cloud sync` and `vmic sync`
report the failure without them, and the site's state is as before.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import yaml

from federation.cli.common import ExitCode
from tests.support.site import World

SECRETS = ("pa55-w0rd-never-shown", "app-cred-secret-never-shown")


def test_a_failing_cloud_never_shows_its_credentials(
    world: World,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    unused_tcp_port: int,
) -> None:
    clouds = {
        "clouds": {
            "with-password": {
                "auth": {
                    "auth_url": f"http://127.0.0.1:{unused_tcp_port}/v3",
                    "username": "vmic",
                    "password": SECRETS[0],
                    "project_name": "ops",
                    "user_domain_name": "Default",
                    "project_domain_name": "Default",
                },
                "region_name": "RegionOne",
            },
            "with-app-credential": {
                "auth_type": "v3applicationcredential",
                "auth": {
                    "auth_url": f"http://127.0.0.1:{unused_tcp_port}/v3",
                    "application_credential_id": "0123456789abcdef",
                    "application_credential_secret": SECRETS[1],
                },
                "region_name": "RegionOne",
            },
        }
    }
    path = tmp_path / "clouds.yaml"
    path.write_text(yaml.safe_dump(clouds))
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(path))
    world.publish(version=1, images=(1,))
    assert world.subscribe(auto=True) == 0
    assert world.vmic("sync") == 0
    assert world.vmic("cloud", "add", "a", "--os-cloud", "with-password") == 0
    assert world.vmic("cloud", "add", "b", "--os-cloud", "with-app-credential") == 0
    before = world.snapshot()
    capsys.readouterr()

    assert world.vmic("cloud", "sync") == ExitCode.CLOUD
    assert world.vmic("cloud", "sync", "b", "--json") == ExitCode.CLOUD
    assert world.vmic("sync") == ExitCode.PROBLEMS

    said = capsys.readouterr()
    with world.store() as store:
        history = " ".join(str(h) for h in store.history())
    for text in (said.out, said.err, world.home.log.read_text(), history):
        for secret in SECRETS:
            assert secret not in text
    assert "cloud a" in said.err
    assert world.snapshot() == before


@pytest.fixture
def unused_tcp_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
