"""X.509 for vmic: certificates and keys, distinguished names, the trust store
(CApath directory and CRLs), chain validation, XML signatures to the vmic
profile, and a development CA. It depends on nothing else of vmic; the error
tree (:mod:`keys.errors`) and the limits (:mod:`keys.limits`) live here so
that every package can use them.
"""
