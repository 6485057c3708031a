"""The site database's schema: one script per version, applied in order.

``SCHEMA[n]`` takes a database from schema ``n`` to ``n + 1``;
:meth:`site_agent.store.Store.open` runs each script the file has not had, once,
in a transaction, and records the version in ``PRAGMA user_version``. Scripts
are only ever appended: a released one is never edited.
"""

from __future__ import annotations

SCHEMA = [
    """
    CREATE TABLE subscriptions (
        name TEXT PRIMARY KEY, url TEXT NOT NULL, list_id TEXT NOT NULL UNIQUE,
        self_url TEXT NOT NULL, pins TEXT NOT NULL, auto_approve INTEGER NOT NULL,
        created TEXT NOT NULL, etag TEXT, last_modified TEXT, last_attempt TEXT,
        last_success TEXT, last_error TEXT, last_error_kind TEXT
    );
    CREATE TABLE lists (
        list_id TEXT NOT NULL, version INTEGER NOT NULL, sha256 TEXT NOT NULL,
        updated TEXT NOT NULL, expires TEXT NOT NULL, accepted_at TEXT NOT NULL,
        path TEXT NOT NULL, subscription TEXT NOT NULL, signer TEXT NOT NULL,
        expired_reported INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (list_id, version)
    );
    CREATE TABLE history (
        id INTEGER PRIMARY KEY AUTOINCREMENT, subscription TEXT NOT NULL, list_id TEXT,
        at TEXT NOT NULL, outcome TEXT NOT NULL, version INTEGER, sha256 TEXT,
        reason TEXT, kind TEXT
    );
    CREATE INDEX history_by_subscription ON history (subscription, id);
    CREATE TABLE images (
        image_id TEXT PRIMARY KEY, list_id TEXT NOT NULL, subscription TEXT NOT NULL,
        sha512 TEXT NOT NULL, size INTEGER NOT NULL, url TEXT NOT NULL, title TEXT NOT NULL,
        state TEXT NOT NULL, shareable INTEGER NOT NULL DEFAULT 0, reason TEXT,
        first_seen TEXT NOT NULL, changed_at TEXT NOT NULL, approved_at TEXT,
        list_version INTEGER NOT NULL, entry TEXT NOT NULL
    );
    CREATE INDEX images_by_list ON images (list_id, state);
    CREATE INDEX images_by_sha512 ON images (sha512, state);
    CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL, type TEXT NOT NULL,
        subscription TEXT, image_id TEXT, data TEXT NOT NULL
    );
    CREATE TABLE deliveries (
        event_id INTEGER NOT NULL REFERENCES events(id), hook TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0, delivered_at TEXT, last_error TEXT,
        gave_up INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (event_id, hook)
    );
    """,
    # 2: the federation: the site's own export, its peers, what each peer offers
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE peers (
        name TEXT PRIMARY KEY, url TEXT NOT NULL, list_id TEXT NOT NULL UNIQUE,
        self_url TEXT NOT NULL, pins TEXT NOT NULL, created TEXT NOT NULL,
        etag TEXT, last_modified TEXT, last_attempt TEXT, last_success TEXT,
        last_error TEXT, bytes_received INTEGER NOT NULL DEFAULT 0,
        seconds REAL NOT NULL DEFAULT 0, failures INTEGER NOT NULL DEFAULT 0,
        last_failure TEXT
    );
    CREATE TABLE peer_images (
        peer TEXT NOT NULL REFERENCES peers(name) ON DELETE CASCADE, image_id TEXT NOT NULL,
        sha512 TEXT NOT NULL, size INTEGER NOT NULL, url TEXT NOT NULL,
        source_list TEXT NOT NULL, source_version INTEGER NOT NULL, source_url TEXT NOT NULL,
        title TEXT NOT NULL,
        PRIMARY KEY (peer, image_id)
    );
    CREATE INDEX peer_images_by_sha512 ON peer_images (sha512);
    CREATE INDEX peer_images_by_list ON peer_images (source_list);
    """,
    # 3: the digest of what a list's signature covers, for the same-version rule: the
    # unsigned bytes of an S/MIME message (headers, base64 wrapping) may differ in transit
    """
    ALTER TABLE lists ADD COLUMN content_sha256 TEXT;
    """,
    # 4: peers' exports keep their rollback state apart from endorsers' lists (THREATS 35):
    # a peer's export can never occupy, shadow or block an endorser's list id
    """
    CREATE TABLE peer_exports (
        list_id TEXT NOT NULL, version INTEGER NOT NULL, sha256 TEXT NOT NULL,
        updated TEXT NOT NULL, expires TEXT NOT NULL, accepted_at TEXT NOT NULL,
        path TEXT NOT NULL, subscription TEXT NOT NULL, signer TEXT NOT NULL,
        expired_reported INTEGER NOT NULL DEFAULT 0, content_sha256 TEXT,
        PRIMARY KEY (list_id, version)
    );
    INSERT INTO peer_exports (list_id, version, sha256, updated, expires, accepted_at, path,
        subscription, signer, expired_reported, content_sha256)
        SELECT list_id, version, sha256, updated, expires, accepted_at, path, subscription,
            signer, expired_reported, content_sha256
        FROM lists WHERE subscription GLOB 'peer:*';
    DELETE FROM lists WHERE subscription GLOB 'peer:*';
    """,
    # 5: images vmic registered in (or adopted from) the site's clouds (Glance)
    """
    CREATE TABLE cloud_images (
        cloud TEXT NOT NULL, glance_id TEXT NOT NULL, image_id TEXT NOT NULL,
        sha512 TEXT NOT NULL, state TEXT NOT NULL, adopted INTEGER NOT NULL DEFAULT 0,
        registered_at TEXT NOT NULL, changed_at TEXT NOT NULL, withdrawn_at TEXT,
        last_error TEXT,
        PRIMARY KEY (cloud, glance_id)
    );
    CREATE INDEX cloud_images_by_image ON cloud_images (image_id);
    """,
    # 6: sites watch each other (split views): what each peer's export says it holds, and
    # the alarms raised when two signed versions disagree or an endorser's URL lags behind
    """
    CREATE TABLE peer_holds (
        peer TEXT NOT NULL REFERENCES peers(name) ON DELETE CASCADE, list_id TEXT NOT NULL,
        version INTEGER NOT NULL, content_sha256 TEXT NOT NULL, url TEXT NOT NULL,
        PRIMARY KEY (peer, list_id)
    );
    CREATE TABLE alarms (
        id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, list_id TEXT NOT NULL,
        subscription TEXT NOT NULL, version INTEGER NOT NULL, peer TEXT,
        ours TEXT, theirs TEXT, detail TEXT NOT NULL, evidence TEXT,
        raised_at TEXT NOT NULL, resolved_at TEXT, resolution TEXT
    );
    CREATE INDEX alarms_open ON alarms (resolved_at, list_id);
    ALTER TABLE subscriptions ADD COLUMN endorser_version INTEGER;
    """,
]
SCHEMA_VERSION = len(SCHEMA)
