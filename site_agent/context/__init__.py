"""The site contextualisation CD (DESIGN §7): what a site gives an image it may not change.

* :mod:`~site_agent.context.settings`: ``KEY=VALUE`` settings, checked and
  quoted for /bin/sh (``context.sh``), and read back without running them;
* :mod:`~site_agent.context.tree`: the CD's files (``prolog.sh``,
  ``epilog.sh``, ``context.sh``, the site's extra files), checked;
* :mod:`~site_agent.context.iso`: the ISO 9660 image (Rock Ridge, Joliet),
  byte-for-byte reproducible, built and read with pycdlib;
* :mod:`~site_agent.context.cloudinit`: the NoCloud seed (label ``cidata``);
* :mod:`~site_agent.context.install`: the in-image script and systemd units
  (``vmic-context.sh``, ``vmic-context-*.service`` beside this file);
* :mod:`~site_agent.context.build`: `vmic context build` and `show`.

docs/contextualisation.md describes the CD and the boot sequence.
"""
