"""Images into the site's cloud: OpenStack Glance, kept in step with what the site trusts.

``settings`` reads the ``[[clouds]]`` of config.toml; ``desired`` says what
should be in each cloud (from the store); ``plan`` compares that with what is
there and says what to do; ``glance`` is the only module that talks to
Glance (openstacksdk, imported only when a cloud is used); ``run`` applies a
plan and records what vmic registered.
"""
