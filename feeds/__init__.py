"""The image list: its data model, the Atom writer, the hardened reader of
verified documents, the list verifier (signature, chain, pins, freshness,
versions), the endorser's workflow (a TOML manifest that is rendered and
signed), and the block index of an image. The format is specified in
``feeds/SCHEMA.md``.
"""
