"""The commented ``config.toml`` that `vmic site init` writes
(:func:`site_agent.config.write_default` fills in the trust directory). Every setting is
shown, most commented out at its default; tests/site_agent/test_config.py loads it."""

TEMPLATE = """\
# vmic site configuration. `vmic site init` wrote this file; edit it freely
# (`vmic hooks add/remove` edit the [[hooks]] tables and keep your comments).

[trust]
# OpenSSL CApath-style folder of CA certificates and CRLs (fetch-crl keeps the
# CRLs fresh). Every list must chain to a CA in it. A relative path in this
# file is taken from the folder this file is in (the site home), never from
# the folder a command happens to run in.
directory = {trust}
# "require": every CA in a chain needs a current CRL here (missing or stale
# CRL: the list is rejected). "if-present": use the CRLs that are here.
crl = "require"

[approval]
# Images new to this site: "hold" them until an admin runs `vmic approve`
# (as the HEPiX policy asks), or approve them "auto"matically. A subscription
# made with --auto-approve approves its own images whatever this says.
default = "hold"

[cache]
# Days a withdrawn image stays in cache/expired before it is deleted.
expired_retention_days = 7

[network]
# HTTPS is verified against the system's CAs, or this bundle:
# ca_bundle = "/etc/pki/tls/certs/ca-bundle.crt"
fetch_concurrency = 8
download_concurrency = 2
list_deadline_seconds = 60
read_timeout_seconds = 30
# A transfer slower than this on average (after rate_grace_seconds) is
# abandoned and resumed on the next run.
min_rate_bytes_per_second = 16384
rate_grace_seconds = 20
download_deadline_hours = 6
# Extra attempts after a failed transfer, the first after backoff_seconds
# (doubling each time).
retries = 2
backoff_seconds = 2
# A list over this size, or naming more images, is refused (real lists name a
# few hundred). Verifying a list takes about 13 times its size in memory, and
# verify_concurrency lists are verified at once.
max_list_bytes = 16777216
max_list_entries = 10000
verify_concurrency = 2

[events]
# Attempts to deliver an event to a hook before it is given up and reported.
max_attempts = 5

[identity]
# The site's own certificate signs its export for peer sites (`vmic site
# identity` fills this in); base_url is where peers reach `vmic serve`.
# cert = "/etc/grid-security/vmic/sitecert.pem"
# key = "/etc/grid-security/vmic/sitekey.pem"
# chain = "/etc/grid-security/vmic/chain.pem"
# base_url = "https://vmic.site.example.org:8443"
export_valid_days = 7

[federation]
# Fetch image bytes (and, when the endorser is down, lists) from peers that
# offer them, fastest first, before the endorser's URL (false: the endorser first).
prefer_peers = true
# When peers and the endorser both offer an image, race them: the preferred
# sources start; the others join after race_after_seconds if the first have sent
# nothing or still need more than 30 s; the first download whose SHA-512 matches
# wins and the other is cancelled (a clearly slower one stands down early).
# false: one after the other.
race = true
race_after_seconds = 2
# Approve an image at once when this many peers approved and share it (0: off).
approve_if_peers = 0
# Subscribe automatically to lists that peers carry when their endorser is one
# of these [subject DN, issuer DN] pairs:
# follow = [["/DC=org/DC=example/OU=Users/CN=Jane Endorser", "/DC=org/DC=example/CN=Example CA"]]

[serve]
# `vmic serve`: where to listen, TLS (optional; without it, put a TLS proxy in
# front), and how often served images are re-hashed.
bind = "127.0.0.1:8080"
# tls_cert = "/etc/grid-security/hostcert.pem"
# tls_key = "/etc/grid-security/hostkey.pem"
rehash_hours = 24
# Connections: at most max_connections open at once (the site's peers, pilot
# factories, people), at most max_connections_per_address of them from one
# client address (an IPv6 /64 counts as one address); one more gets 503 with
# Retry-After and is closed. A client has header_timeout_seconds to send a
# request's headers (counted from connecting, or from the first byte of its next
# request), else it gets 408 and is closed, so idle or slow clients cannot hold
# connections others need. listen_backlog connections may wait to be accepted.
# Behind a reverse proxy every request comes from the proxy's address: set
# max_connections_per_address = max_connections there (docs/serving.md).
max_connections = 1024
max_connections_per_address = 128
header_timeout_seconds = 10
listen_backlog = 1024
# Only behind nginx: let nginx send the bytes of the lists in force too.
# `vmic serve` then answers /lists/<id>.atom with an empty body and
# X-Accel-Redirect: <accel_redirect><id>/<version>-<sha256>.atom, nginx's
# internal location for the site home's lists/ folder (docs/serving.md).
# accel_redirect = "/_vmic_lists/"
# Who may fetch the export, the lists and the image bytes: "anyone" who reaches
# this server, or only "peers": clients whose TLS certificate chains to the trust
# directory (CRLs as [trust] crl says) and is that of a peer this site follows
# (`vmic peer add`) or one of allowed_peers; any other client gets 403. "peers"
# needs tls_cert and tls_key (vmic serve's own TLS, not a proxy's). /healthz and
# /metrics stay open to anyone (docs/serving.md, "Serving to peers only").
access = "anyone"
# More certificates served with access = "peers", as [subject DN, issuer DN]:
# allowed_peers = [
#   ["/DC=org/DC=example/CN=host/vmic.site-b.example.org", "/DC=org/DC=example/CN=Example CA"],
# ]
# With access = "peers": the catalogue (/, /image/<uuid>) and the API (/api/v1/)
# stay open to anyone (true), or are for those peers only (false).
public_catalogue = true

# Hooks: commands run for events, without a shell, with the event in VMIC_*
# environment variables and as JSON on stdin. Edit with `vmic hooks add` and
# `vmic hooks remove`, or by hand:
#
# [[hooks]]
# name = "glance"
# on = ["image.available", "image.withdrawn"]
# command = ["/usr/local/bin/vmic-glance", "--cloud", "site1"]
# timeout_seconds = 300

# Clouds: OpenStack Glance, where available images are registered for users
# (`vmic cloud add` writes one; `vmic cloud sync`, and every `vmic sync`, keeps it
# in step). os_cloud is the clouds.yaml entry openstacksdk reads.
#
# [[clouds]]
# name = "site1"
# os_cloud = "openstack"
# lists = []                  # subscriptions whose images go there (empty: all)
# vos = []                    # VOs whose images go there (empty: all)
# visibility = "shared"       # private, shared (with the VO's projects), community, public
# projects = {{ dteam = ["0c4e...PROJECT_ID"] }}
# name_template = "{{title}}"
# withdrawn = "deactivate"    # or "delete"; deactivated images are deleted after
# delete_after_days = 7
"""
