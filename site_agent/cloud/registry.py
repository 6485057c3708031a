"""What vmic registered in each cloud: the ``cloud_images`` rows of the site's store.

A row says that Glance image ``glance_id`` in cloud ``cloud`` holds the
endorsed image ``image_id`` (with bytes ``sha512``), that vmic created it or
adopted it, and its state as vmic last left it: ``active`` (visible to
whom the cloud's settings say), ``deactivated`` (withdrawn at the site;
``withdrawn_at`` says since when, for the grace period before deletion).
vmic acts only on the Glance images these rows name (THREATS 40).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from site_agent.records import iso, parse_iso
from site_agent.store import Store

ACTIVE, DEACTIVATED = "active", "deactivated"


@dataclass(frozen=True, slots=True, kw_only=True)
class Registration:
    cloud: str
    glance_id: str
    image_id: str
    sha512: str
    state: str
    adopted: bool
    registered_at: datetime
    changed_at: datetime
    withdrawn_at: datetime | None = None
    last_error: str | None = None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Registration:
        return cls(
            cloud=row["cloud"],
            glance_id=row["glance_id"],
            image_id=row["image_id"],
            sha512=row["sha512"],
            state=row["state"],
            adopted=bool(row["adopted"]),
            registered_at=parse_iso(row["registered_at"]) or datetime.min.replace(tzinfo=UTC),
            changed_at=parse_iso(row["changed_at"]) or datetime.min.replace(tzinfo=UTC),
            withdrawn_at=parse_iso(row["withdrawn_at"]),
            last_error=row["last_error"],
        )


class Registry:
    """Typed access to ``cloud_images`` of one open :class:`Store`."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def all(self, cloud: str | None = None) -> list[Registration]:
        if cloud is None:
            rows = self.store._rows("SELECT * FROM cloud_images ORDER BY cloud, image_id")
        else:
            rows = self.store._rows(
                "SELECT * FROM cloud_images WHERE cloud = ? ORDER BY image_id", (cloud,)
            )
        return [Registration.from_row(r) for r in rows]

    def of_image(self, image_id: str) -> list[Registration]:
        rows = self.store._rows(
            "SELECT * FROM cloud_images WHERE image_id = ? ORDER BY cloud", (image_id,)
        )
        return [Registration.from_row(r) for r in rows]

    def put(self, row: Registration) -> None:
        self.store._run(
            "INSERT INTO cloud_images (cloud, glance_id, image_id, sha512, state, adopted,"
            " registered_at, changed_at, withdrawn_at, last_error)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (cloud, glance_id) DO UPDATE SET state = excluded.state,"
            " changed_at = excluded.changed_at, withdrawn_at = excluded.withdrawn_at,"
            " last_error = excluded.last_error",
            (
                row.cloud,
                row.glance_id,
                row.image_id,
                row.sha512,
                row.state,
                int(row.adopted),
                iso(row.registered_at),
                iso(row.changed_at),
                iso(row.withdrawn_at),
                row.last_error,
            ),
        )

    def forget(self, cloud: str, glance_id: str) -> None:
        self.store._run(
            "DELETE FROM cloud_images WHERE cloud = ? AND glance_id = ?", (cloud, glance_id)
        )
