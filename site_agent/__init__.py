"""The site agent (to come): the site's configuration and SQLite store, its
subscriptions to endorsers' lists, `vmic sync` (fetch, verify, record,
approve, mirror with streaming SHA-512 checks, withdraw), events and hooks,
locking, and the contextualisation CD. It builds on :mod:`feeds` and
:mod:`keys` and defines the small interface through which the federation
offers peer copies of lists and image bytes.
"""
