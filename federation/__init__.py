"""The network between sites, and the `vmic` command line. The HTTP server
(feeds, site exports, images by content address, catalogue page), signed site
exports, peer subscriptions and the choice of a source for image bytes will
live here. Since this package sits on top of the dependency graph
(``keys`` <- ``feeds`` <- ``site_agent`` <- ``federation``), it also holds the
one command line that reaches every package (:mod:`federation.cli`).
"""
