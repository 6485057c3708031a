"""The network between sites, and the `vmic` command line. Here are the HTTP
server of `vmic serve` (lists in force, the signed site export, images by
content address, the catalogue pages and its JSON API, health and metrics;
an endorser's own list and images with ``--manifest``; serving peers only,
by their TLS certificates), the signed site export, following peers,
comparing what peers hold with the site's own lists (split views), and the
choice of a source for image bytes. Since this package sits on top of
the dependency graph (``keys`` <- ``feeds`` <- ``site_agent`` <- ``federation``),
it also holds the one command line that reaches every package
(:mod:`federation.cli`, one module per command group).
"""
