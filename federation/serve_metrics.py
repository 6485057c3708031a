"""`GET /healthz` (JSON) and `GET /metrics` (Prometheus text format 0.0.4) of `vmic serve`.

Metrics, read from the store at each scrape plus the server's own counters:

- ``vmic_lists``: subscriptions; per subscription (labels ``subscription``,
  ``list_id``) ``vmic_list_version``, ``vmic_list_expires_timestamp_seconds``,
  ``vmic_list_last_success_timestamp_seconds`` and ``vmic_list_last_attempt_ok``;
- ``vmic_images{state=...}`` for every image state;
- ``vmic_last_sync_timestamp_seconds`` (the newest attempt of any
  subscription) and ``vmic_last_sync_ok`` (1 when every subscription's last
  attempt succeeded);
- ``vmic_verification_failures_total``: lists rejected (history);
- ``vmic_peer_failures_total{peer=...}``: bad transfers from each peer;
- ``vmic_trust_unusable_files`` and ``vmic_trust_unusable_file{file=...}``:
  files of the trust directory the last sync could not use;
- ``vmic_cloud_images{cloud=...,state=...}``: the Glance images vmic holds in
  each cloud (registered or adopted; the site's registry), by state:
  ``uploading`` (bytes on their way, or left by a run that was cut off: the
  next run deletes it), ``active``, ``deactivated`` (withdrawn, waiting for
  deletion); each cloud configured when `vmic serve` started has all three,
  at 0 when it holds none;
- ``vmic_delta_bytes_reused_total`` and ``vmic_delta_bytes_fetched_total``:
  what updates by blocks (:mod:`site_agent.delta`) took from what the site
  held, and what they fetched;
- ``vmic_alarms_open{kind=...}``: open alarms (:mod:`site_agent.alarms`),
  ``equivocation`` and ``freeze``, each at 0 when none is open;
- ``vmic_bytes_served_total``, ``vmic_image_checks_total``,
  ``vmic_image_check_failures_total`` and ``vmic_image_vouched_total`` (files
  served on the hash `vmic sync` made while downloading them): this server
  process's own counts.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from aiohttp import hdrs, web

from federation.serve_state import Document, log, state_of
from keys.errors import StoreError
from site_agent.alarms import KINDS, AlarmStore
from site_agent.cloud.plan import UPLOADING
from site_agent.cloud.registry import ACTIVE, DEACTIVATED, Registry
from site_agent.peerstore import PeerStore
from site_agent.records import STATES, iso
from site_agent.site import DELTA_FETCHED, DELTA_REUSED
from site_agent.store import Store, trust_problems


@dataclass(frozen=True, slots=True, kw_only=True)
class ListSample:
    subscription: str
    list_id: str
    version: int | None
    expires: datetime | None
    last_success: datetime | None
    last_ok: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class Snapshot:
    lists: list[ListSample]
    images: dict[str, int]
    last_sync: datetime | None
    rejected: int
    peer_failures: dict[str, int]
    unusable_trust_files: list[str]
    cloud_images: dict[tuple[str, str], int]
    """Registrations by (cloud, state)."""
    delta_reused: int = 0
    delta_fetched: int = 0
    alarms: dict[str, int] = field(default_factory=dict)
    """Open alarms by kind (every kind, 0 when none)."""


CLOUD_STATES = (UPLOADING, ACTIVE, DEACTIVATED)


def take_snapshot(store: Store, clouds: tuple[str, ...] = ()) -> Snapshot:
    """What the metrics report, read on the store reader's thread; ``clouds`` are the
    configured clouds' names (each reported, even with no image)."""
    lists = []
    for sub in store.subscriptions():
        current = store.current_list(sub.list_id)
        lists.append(
            ListSample(
                subscription=sub.name,
                list_id=sub.list_id,
                version=current.version if current else None,
                expires=current.expires if current else None,
                last_success=sub.last_success,
                last_ok=sub.last_attempt is not None and sub.last_error is None,
            )
        )
    images = Counter(image.state for image in store.images())
    attempts = [s.last_attempt for s in store.subscriptions() if s.last_attempt is not None]
    held = Counter((r.cloud, r.state) for r in Registry(store).all())
    names = sorted({*clouds, *(cloud for cloud, _ in held)})
    states = [*CLOUD_STATES, *sorted({s for _, s in held} - set(CLOUD_STATES))]
    return Snapshot(
        lists=lists,
        images={state: images.get(state, 0) for state in STATES},
        last_sync=max(attempts) if attempts else None,
        rejected=sum(1 for h in store.history() if h.outcome == "rejected"),
        peer_failures={p.name: p.failures for p in PeerStore(store).peers()},
        unusable_trust_files=[p.split(":", 1)[0] for p in trust_problems(store)],
        cloud_images={(c, s): held.get((c, s), 0) for c in names for s in states},
        delta_reused=_count(store.meta(DELTA_REUSED)),
        delta_fetched=_count(store.meta(DELTA_FETCHED)),
        alarms=_open_alarms(store),
    )


def _open_alarms(store: Store) -> dict[str, int]:
    found = Counter(alarm.kind for alarm in AlarmStore(store).alarms())
    return {kind: found.get(kind, 0) for kind in KINDS}


def _count(value: str | None) -> int:
    try:
        return max(0, int(value or 0))
    except ValueError:
        return 0


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(**labels: str) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_label(v)}"' for k, v in labels.items()) + "}"


def _stamp(moment: datetime | None) -> int:
    return int(moment.timestamp()) if moment else 0


class _Exposition:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, text: str) -> None:
        self.lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]

    def sample(self, name: str, value: float, **labels: str) -> None:
        number = str(int(value)) if float(value).is_integer() else repr(float(value))
        self.lines.append(f"{name}{_labels(**labels)} {number}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def render_metrics(
    snap: Snapshot, *, bytes_served: int, checks: int, check_failures: int, vouched: int = 0
) -> str:
    out = _Exposition()
    out.family("vmic_lists", "gauge", "Image lists this site subscribes to.")
    out.sample("vmic_lists", len(snap.lists))
    per_list: tuple[tuple[str, str, Callable[[ListSample], int]], ...] = (
        ("vmic_list_version", "Version of the list in force.", lambda s: s.version or 0),
        (
            "vmic_list_expires_timestamp_seconds",
            "When the list in force expires (Unix time).",
            lambda s: _stamp(s.expires),
        ),
        (
            "vmic_list_last_success_timestamp_seconds",
            "Last successful fetch of the list (Unix time; 0: never).",
            lambda s: _stamp(s.last_success),
        ),
        (
            "vmic_list_last_attempt_ok",
            "1 when the last attempt to fetch the list succeeded.",
            lambda s: int(s.last_ok),
        ),
    )
    for name, text, value in per_list:
        out.family(name, "gauge", text)
        for item in snap.lists:
            out.sample(name, value(item), subscription=item.subscription, list_id=item.list_id)
    out.family("vmic_images", "gauge", "Images known to this site, by state.")
    for state, count in snap.images.items():
        out.sample("vmic_images", count, state=state)
    out.family("vmic_last_sync_timestamp_seconds", "gauge", "Newest sync attempt (Unix time).")
    out.sample("vmic_last_sync_timestamp_seconds", _stamp(snap.last_sync))
    out.family("vmic_last_sync_ok", "gauge", "1 when every subscription's last attempt succeeded.")
    out.sample("vmic_last_sync_ok", int(all(s.last_ok for s in snap.lists)))
    out.family("vmic_bytes_served_total", "counter", "Body bytes served by this process.")
    out.sample("vmic_bytes_served_total", bytes_served)
    out.family(
        "vmic_verification_failures_total", "counter", "List versions rejected by verification."
    )
    out.sample("vmic_verification_failures_total", snap.rejected)
    out.family("vmic_peer_failures_total", "counter", "Failed or bad transfers, by peer.")
    for peer, failures in snap.peer_failures.items():
        out.sample("vmic_peer_failures_total", failures, peer=peer)
    out.family(
        "vmic_trust_unusable_files",
        "gauge",
        "Files of the trust directory the last sync could not use (see vmic site check).",
    )
    out.sample("vmic_trust_unusable_files", len(snap.unusable_trust_files))
    out.family("vmic_trust_unusable_file", "gauge", "1 for each unusable trust file, by name.")
    for name in snap.unusable_trust_files:
        out.sample("vmic_trust_unusable_file", 1, file=name)
    out.family("vmic_image_checks_total", "counter", "Cached files re-hashed by this process.")
    out.sample("vmic_image_checks_total", checks)
    out.family(
        "vmic_image_check_failures_total",
        "counter",
        "Cached files that failed a re-hash and were quarantined by this process.",
    )
    out.sample("vmic_image_check_failures_total", check_failures)
    out.family(
        "vmic_image_vouched_total",
        "counter",
        "Cached files first served on the hash vmic sync made while downloading them.",
    )
    out.sample("vmic_image_vouched_total", vouched)
    out.family(
        "vmic_delta_bytes_reused_total",
        "counter",
        "Image bytes that updates by blocks took from what the site held instead of fetching.",
    )
    out.sample("vmic_delta_bytes_reused_total", snap.delta_reused)
    out.family(
        "vmic_delta_bytes_fetched_total",
        "counter",
        "Bytes that updates by blocks fetched (block indexes and ranges).",
    )
    out.sample("vmic_delta_bytes_fetched_total", snap.delta_fetched)
    out.family(
        "vmic_cloud_images",
        "gauge",
        "Glance images vmic registered or adopted, by cloud and state.",
    )
    for (cloud, state), count in snap.cloud_images.items():
        out.sample("vmic_cloud_images", count, cloud=cloud, state=state)
    out.family(
        "vmic_alarms_open",
        "gauge",
        "Open alarms by kind: equivocation (two signed versions of a list; the list is "
        "frozen), freeze (an endorser's URL lags behind peers). See vmic alarms.",
    )
    for kind, count in snap.alarms.items():
        out.sample("vmic_alarms_open", count, kind=kind)
    return out.text()


async def metrics(request: web.Request) -> web.Response:
    state = state_of(request)
    clouds = tuple(cloud.name for cloud in state.config.clouds)
    snap = await state.reader.run(lambda store: take_snapshot(store, clouds))
    body = render_metrics(
        snap,
        bytes_served=state.counters.bytes_served,
        checks=state.guard.checks,
        check_failures=state.guard.failures,
        vouched=state.guard.vouches,
    )
    return web.Response(
        body=body.encode("utf-8"),
        headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
    )


JSON = "application/json; charset=utf-8"


def health_document(store: Store) -> Document:
    """The /healthz answer while the store reads (kept until the store changes)."""
    subs = store.subscriptions()
    attempts = [s.last_attempt for s in subs if s.last_attempt is not None]
    body = {
        "ok": True,
        "database": True,
        "subscriptions": len(subs),
        "last_sync": iso(max(attempts)) if attempts else None,
        "last_sync_ok": all(s.last_attempt is not None and s.last_error is None for s in subs),
    }
    return Document(body=json.dumps(body).encode(), content_type=JSON)


async def healthz(request: web.Request) -> web.Response:
    state = state_of(request)
    try:
        doc = await state.health.get(None)
    except StoreError as exc:
        log.error("healthz: %s", exc.message)
        failed = {"ok": False, "database": False, "last_sync": None, "error": exc.message}
        return web.Response(status=503, text=json.dumps(failed), content_type="application/json")
    return web.Response(body=doc.body, headers={hdrs.CONTENT_TYPE: doc.content_type})
