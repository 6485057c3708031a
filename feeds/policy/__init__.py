"""The trusted-image policy check: does an image carry accounts, keys or credentials?

:func:`feeds.policy.check.check_image` reads an image (a folder, a tar
archive, a raw disk with ext2/3/4 file systems, or a qcow2/vmdk/vdi/vhd disk
through ``qemu-img``) without extracting or executing anything of it, runs
the rules of :mod:`feeds.policy.rules` over what it finds and returns a
:class:`feeds.policy.model.Report`. ``vmic policy check`` prints it and
``vmic endorse add`` refuses an image with errors unless the endorser gives
a reason to override.
"""
