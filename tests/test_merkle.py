"""RFC 9162 Merkle functions against the published Certificate Transparency test data
(transparency-dev/merkle testonly and certificate-transparency's Python tests), plus
properties and every kind of mutated proof."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from securex.audit.merkle import (
    EMPTY_ROOT,
    ProofError,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    root_hash,
    verify_consistency,
    verify_inclusion,
)

LEAVES = [
    bytes.fromhex(h)
    for h in (
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    )
]
HASHES = [leaf_hash(d) for d in LEAVES]
ROOTS = [
    bytes.fromhex(h)
    for h in (
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    )
]
INCLUSION = [
    (
        0,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        [
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (
        1,
        5,
        [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
    (0, 1, []),
]
CONSISTENCY = [
    (1, 1, []),
    (
        1,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        [
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
]


def test_empty_tree_and_roots_of_every_size():
    assert EMPTY_ROOT == hashlib.sha256(b"").digest() == root_hash([])
    for size in range(9):
        assert root_hash(HASHES[:size]) == ROOTS[size], size


@pytest.mark.parametrize("index,size,expected", INCLUSION)
def test_inclusion_vectors(index, size, expected):
    proof = inclusion_proof(HASHES[:size], index)
    assert [p.hex() for p in proof] == expected
    verify_inclusion(index, size, HASHES[index], proof, ROOTS[size])


@pytest.mark.parametrize("old,new,expected", CONSISTENCY)
def test_consistency_vectors(old, new, expected):
    proof = consistency_proof(HASHES[:new], old)
    assert [p.hex() for p in proof] == expected
    verify_consistency(old, new, ROOTS[old], ROOTS[new], proof)


def test_every_proof_of_the_vector_tree_verifies():
    for size in range(1, 9):
        for index in range(size):
            verify_inclusion(
                index, size, HASHES[index], inclusion_proof(HASHES[:size], index), ROOTS[size]
            )
        for old in range(size + 1):
            verify_consistency(
                old, size, ROOTS[old], ROOTS[size], consistency_proof(HASHES[:size], old)
            )


def _mutations(proof: list[bytes]):
    """Every way to damage a proof: drop, add, duplicate, reorder, flip."""
    extra = hashlib.sha256(b"extra").digest()
    yield [*proof, extra]
    yield [extra, *proof]
    for i in range(len(proof)):
        yield proof[:i] + proof[i + 1 :]
        yield [*proof[: i + 1], proof[i], *proof[i + 1 :]]
        flipped = bytearray(proof[i])
        flipped[i % 32] ^= 1
        yield [*proof[:i], bytes(flipped), *proof[i + 1 :]]
        yield [*proof[:i], proof[i][:31], *proof[i + 1 :]]
    if len(proof) > 1:
        yield list(reversed(proof))


def test_mutated_inclusion_proofs_fail():
    for size in range(1, 9):
        for index in range(size):
            proof = inclusion_proof(HASHES[:size], index)
            for bad in _mutations(proof):
                with pytest.raises(ProofError):
                    verify_inclusion(index, size, HASHES[index], bad, ROOTS[size])
            with pytest.raises(ProofError):  # another leaf
                verify_inclusion(
                    index,
                    size,
                    HASHES[(index + 1) % 8] if size > 1 else leaf_hash(b"x"),
                    proof,
                    ROOTS[size],
                )
            with pytest.raises(ProofError):  # another root
                verify_inclusion(index, size, HASHES[index], proof, ROOTS[size - 1])
            for wrong_index in (size, size + 1, -1):
                with pytest.raises(ProofError):
                    verify_inclusion(wrong_index, size, HASHES[index], proof, ROOTS[size])
            if size > 1:
                with pytest.raises(ProofError):  # right index, wrong position claimed
                    verify_inclusion((index + 1) % size, size, HASHES[index], proof, ROOTS[size])


def test_mutated_consistency_proofs_fail():
    for size in range(1, 9):
        for old in range(1, size):
            proof = consistency_proof(HASHES[:size], old)
            for bad in _mutations(proof):
                with pytest.raises(ProofError):
                    verify_consistency(old, size, ROOTS[old], ROOTS[size], bad)
            with pytest.raises(ProofError):
                verify_consistency(old, size, ROOTS[old - 1], ROOTS[size], proof)
            with pytest.raises(ProofError):
                verify_consistency(old, size, ROOTS[old], ROOTS[size - 1], proof)
            with pytest.raises(ProofError):
                verify_consistency(size, old, ROOTS[size], ROOTS[old], proof)
            with pytest.raises(ProofError):
                verify_consistency(old, size, ROOTS[old], ROOTS[size], [])
    with pytest.raises(ProofError):
        verify_consistency(3, 3, ROOTS[3], ROOTS[3], [ROOTS[1]])
    with pytest.raises(ProofError):
        verify_consistency(0, 3, ROOTS[1], ROOTS[3], [])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(max_size=8), min_size=1, max_size=70), st.data())
def test_random_trees(leaves, data):
    hashes = [leaf_hash(x) for x in leaves]
    size = len(hashes)
    root = root_hash(hashes)
    index = data.draw(st.integers(0, size - 1))
    verify_inclusion(index, size, hashes[index], inclusion_proof(hashes, index), root)
    old = data.draw(st.integers(0, size))
    verify_consistency(old, size, root_hash(hashes[:old]), root, consistency_proof(hashes, old))
