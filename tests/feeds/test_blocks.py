"""The block index format (feeds.blocks, SCHEMA §13): building it, and refusing anything
that is not exactly an index of the image the list describes."""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from feeds.blocks import (
    BLOCK,
    DIGEST,
    HEADER,
    MAGIC,
    ZERO_DIGEST,
    BlockIndex,
    Indexer,
    blocks_in,
    hash_and_index,
    index_file,
    index_size,
    parse_index,
)
from keys.errors import ConfigError, ListFormatError
from keys.fileio import CHUNK, sha512_file


def _data(size: int, seed: bytes = b"vmic") -> bytes:
    return hashlib.shake_256(seed).digest(size)


def _expected(data: bytes) -> bytes:
    """The index of ``data`` written out from the format's description, not from the code."""
    digests = b"".join(
        hashlib.sha256(data[at : at + BLOCK]).digest()[:DIGEST] for at in range(0, len(data), BLOCK)
    )
    return MAGIC + struct.pack(">IIQ", BLOCK, DIGEST, len(data)) + digests


@pytest.mark.parametrize("size", [0, 1, BLOCK - 1, BLOCK, BLOCK + 1, 3 * BLOCK + 17, 10 * BLOCK])
def test_the_index_is_the_documented_format_for_any_size(size: int) -> None:
    data = _data(size)
    indexer = Indexer()
    indexer.update(data)
    index = indexer.finish()
    assert index.encode() == _expected(data)
    assert len(index.encode()) == index_size(size) == HEADER.size + DIGEST * blocks_in(size)
    assert index.count == blocks_in(size) == -(-size // BLOCK)
    assert parse_index(index.encode(), image_size=size) == index


def test_the_last_short_block_is_hashed_as_it_is(tmp_path: Path) -> None:
    data = _data(2 * BLOCK + 100)
    path = tmp_path / "disk.raw"
    path.write_bytes(data)
    index = index_file(path)
    assert index.count == 3
    assert index.length(2) == 100
    assert index.at(2) == hashlib.sha256(data[2 * BLOCK :]).digest()[:DIGEST]
    assert index.at(0) == hashlib.sha256(data[:BLOCK]).digest()[:DIGEST]


def test_a_block_of_zeros_has_the_zero_digest() -> None:
    indexer = Indexer()
    indexer.update(bytes(BLOCK) + b"x")
    index = indexer.finish()
    assert index.at(0) == ZERO_DIGEST
    assert index.at(1) != ZERO_DIGEST


@given(
    data=st.binary(max_size=5 * BLOCK + 99),
    cuts=st.lists(st.integers(min_value=0, max_value=5 * BLOCK + 99), max_size=12),
)
def test_the_indexer_gives_the_same_index_whatever_the_pieces(data: bytes, cuts: list[int]) -> None:
    indexer = Indexer()
    start = 0
    for cut in sorted({min(c, len(data)) for c in cuts}):
        indexer.update(data[start:cut])
        start = cut
    indexer.update(memoryview(data)[start:])
    assert indexer.finish().encode() == _expected(data)


def test_hash_and_index_reads_the_file_once_in_the_chunks_sha512_file_reads(
    tmp_path: Path,
) -> None:
    data = _data(2 * CHUNK + 4097)
    path = tmp_path / "disk.raw"
    path.write_bytes(data)
    chunks: list[int] = []
    digest, size, index = hash_and_index(path, progress=chunks.append)
    assert (digest, size) == sha512_file(path)
    assert chunks == [CHUNK, CHUNK, 4097]
    assert index == index_file(path)
    assert index.encode() == _expected(data)


def test_hash_and_index_of_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        hash_and_index(tmp_path / "absent.raw")


# -- parse_index refuses what is not exactly the index -----------------------------------

SIZE = 3 * BLOCK + 5


@pytest.fixture(scope="module")
def good() -> bytes:
    return _expected(_data(SIZE))


def _header(
    *, magic: bytes = MAGIC, block: int = BLOCK, digest: int = DIGEST, size: int = SIZE
) -> bytes:
    return HEADER.pack(magic, block, digest, size)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda raw: raw[:-1], "needs"),
        (lambda raw: raw[:-DIGEST], "needs"),
        (lambda raw: raw + b"\0", "needs"),
        (lambda raw: raw + raw[-DIGEST:], "needs"),
        (lambda raw: raw[: HEADER.size - 1], "shorter than its header"),
        (lambda raw: b"", "shorter than its header"),
        (lambda raw: _header(magic=b"vmicblk2") + raw[HEADER.size :], "wrong magic"),
        (lambda raw: _header(magic=b"VMICBLK1") + raw[HEADER.size :], "wrong magic"),
        (lambda raw: _header(block=8192) + raw[HEADER.size :], "blocks of 8192 bytes"),
        (lambda raw: _header(block=0) + raw[HEADER.size :], "blocks of 0 bytes"),
        (lambda raw: _header(digest=32) + raw[HEADER.size :], "32-byte digests"),
        (lambda raw: _header(size=SIZE + 1) + raw[HEADER.size :], "for an image of"),
        (lambda raw: _header(size=2**64 - 1) + raw[HEADER.size :], "for an image of"),
    ],
    ids=[
        "one-byte-short",
        "one-digest-short",
        "one-byte-extra",
        "one-digest-extra",
        "header-cut",
        "empty",
        "other-magic",
        "magic-upper-case",
        "block-8192",
        "block-0",
        "digest-32",
        "image-size-off-by-one",
        "image-size-huge",
    ],
)
def test_parse_index_refuses_anything_but_the_exact_index(
    good: bytes, mutate: object, message: str
) -> None:
    raw = mutate(good)  # type: ignore[operator]
    with pytest.raises(ListFormatError, match=message):
        parse_index(raw, image_size=SIZE)


def test_parse_index_refuses_an_index_of_another_image_size(good: bytes) -> None:
    for size in (SIZE - 1, SIZE + 1, 0, SIZE + BLOCK):
        with pytest.raises(ListFormatError, match="for an image of"):
            parse_index(good, image_size=size)
    with pytest.raises(ListFormatError, match="negative"):
        parse_index(good, image_size=-1)


def test_parse_index_refuses_an_index_whose_digests_do_not_fit_the_size() -> None:
    """The header says the right size but the digests are for a larger image."""
    raw = _header(size=BLOCK) + bytes(2 * DIGEST)
    with pytest.raises(ListFormatError, match="needs"):
        parse_index(raw, image_size=BLOCK)


@given(raw=st.binary(max_size=200), size=st.integers(min_value=0, max_value=20 * BLOCK))
def test_parse_index_on_arbitrary_bytes_gives_an_index_or_a_list_format_error(
    raw: bytes, size: int
) -> None:
    try:
        index = parse_index(raw, image_size=size)
    except ListFormatError:
        return
    assert isinstance(index, BlockIndex)
    assert index.encode() == raw
    assert index.size == size


@given(
    size=st.integers(min_value=0, max_value=8 * BLOCK),
    tail=st.binary(max_size=8 * DIGEST + 3),
    header_size=st.one_of(st.none(), st.integers(min_value=0, max_value=2**64 - 1)),
)
def test_parse_index_on_a_valid_header_with_any_digests_checks_the_length(
    size: int, tail: bytes, header_size: int | None
) -> None:
    """Arbitrary bytes rarely reach past the magic: these start with a valid header."""
    raw = _header(size=size if header_size is None else header_size) + tail
    try:
        index = parse_index(raw, image_size=size)
    except ListFormatError:
        assert header_size not in (None, size) or len(tail) != DIGEST * blocks_in(size)
        return
    assert len(tail) == DIGEST * blocks_in(size)
    assert index.digests == tail
