"""The site agent: the site home, its configuration and SQLite store, the lock,
subscriptions to endorsers' lists, `vmic sync` (fetch, verify, record,
approve, mirror with streaming SHA-512 checks, withdraw; each list, peer,
download and hook a unit of its own; accepted lists committed in groups,
:mod:`site_agent.batch`), where image bytes come from (peers raced against
the endorser, :mod:`site_agent.sources`; updates that fetch only the blocks
that changed, :mod:`site_agent.delta`), the content-addressed cache, events
and hooks, the site's health (:mod:`site_agent.status`), images into
OpenStack Glance (:mod:`site_agent.cloud`) and the contextualisation CD
(:mod:`site_agent.context`). It builds on :mod:`feeds` and :mod:`keys` and
defines the small interface (:mod:`site_agent.peering`) through which the
federation offers peer copies of lists and image bytes.
"""
