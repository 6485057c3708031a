"""`make demo` runs the whole loop and shows what the README promises."""

from __future__ import annotations

from pathlib import Path

import pytest

from federation.cli.common import human_size
from federation.demo import main


def test_the_demo_runs_the_whole_loop(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--dir", str(tmp_path / "demo")]) == 0

    out = capsys.readouterr().out
    assert "is trusted" in out
    steps = out.split("\n== ")
    approve_sync = next(s for s in steps if s.startswith("13."))
    assert approve_sync.count(" available ") >= 2
    revoke_sync = next(s for s in steps if s.startswith("14."))
    assert "accepted version 2" in revoke_sync
    assert " revoked " in revoke_sync.split("$ vmic images")[-1]
    peer_sync = next(s for s in steps if s.startswith("17."))
    assert "downloaded 1" in peer_sync
    served = (tmp_path / "demo" / "www" / "tiny-alma9.tar.gz").stat().st_size
    assert f"received {human_size(served)}" in peer_sync  # the bytes came from site A
    policy = next(s for s in steps if s.startswith("4."))
    assert "authorized-keys" in policy


def test_the_demo_refuses_a_folder_it_did_not_make(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "precious.txt").write_text("keep me")

    with pytest.raises(SystemExit):
        main(["--dir", str(tmp_path / "mine")])

    assert (tmp_path / "mine" / "precious.txt").read_text() == "keep me"
