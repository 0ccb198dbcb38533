"""RFC 9162 (Certificate Transparency 2.0) Merkle tree hashing and proofs.

leaf hash = SHA-256(0x00 || data); node hash = SHA-256(0x01 || left || right); the empty
tree hashes to SHA-256(""). Trees of any size split at the largest power of two below
their size (RFC 9162 section 2.1.1).

The proof algorithms are written once, as *plans*: the list of leaf ranges whose subtree
hashes make up a proof (`inclusion_ranges`, `consistency_ranges`). The functions below
fill a plan from a list of leaf hashes; the audit log fills the same plans from the
subtree hashes it stores, so proving never rescans the log.

Verifiers are strict and give one `ProofError` for every way a proof can be wrong: an
index outside the tree, a proof too short or too long, a wrong hash.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

from securex.errors import SecurexError

__all__ = [
    "EMPTY_ROOT",
    "ProofError",
    "consistency_proof",
    "consistency_ranges",
    "inclusion_proof",
    "inclusion_ranges",
    "leaf_hash",
    "node_hash",
    "root_hash",
    "verify_consistency",
    "verify_inclusion",
]

EMPTY_ROOT = hashlib.sha256(b"").digest()
Range = tuple[int, int]  # (first leaf, number of leaves)


class ProofError(SecurexError):
    """A proof that does not prove what it claims, whatever the reason."""

    status = 422
    slug = "invalid-proof"
    title = "Preuve invalide"
    exit_code = 1


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly below n (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def subtree_root(hashes: Sequence[bytes]) -> bytes:
    """MTH over a non-empty list of leaf hashes."""
    n = len(hashes)
    if n == 1:
        return hashes[0]
    k = _split(n)
    return node_hash(subtree_root(hashes[:k]), subtree_root(hashes[k:]))


def root_hash(leaf_hashes: Sequence[bytes]) -> bytes:
    return subtree_root(leaf_hashes) if leaf_hashes else EMPTY_ROOT


def inclusion_ranges(index: int, size: int) -> list[Range]:
    """RFC 9162 PATH(index, D[0:size]) as leaf ranges, nearest sibling first."""
    if not 0 <= index < size:
        raise ValueError(f"index {index} outside a tree of {size} leaves")
    ranges: list[Range] = []
    start, n, m = 0, size, index
    while n > 1:
        k = _split(n)
        if m < k:
            ranges.append((start + k, n - k))
            n = k
        else:
            ranges.append((start, k))
            start, n, m = start + k, n - k, m - k
    ranges.reverse()
    return ranges


def consistency_ranges(old_size: int, new_size: int) -> list[Range]:
    """RFC 9162 PROOF(old_size, D[0:new_size]) as leaf ranges."""
    if not 0 <= old_size <= new_size:
        raise ValueError(f"no consistency proof from {old_size} to {new_size}")
    if old_size in (0, new_size):
        return []
    ranges: list[Range] = []
    start, n, m, whole = 0, new_size, old_size, True
    while m != n:
        k = _split(n)
        if m <= k:
            ranges.append((start + k, n - k))
            n = k
        else:
            ranges.append((start, k))
            start, n, m, whole = start + k, n - k, m - k, False
    if not whole:
        ranges.append((start, m))
    ranges.reverse()
    return ranges


def _fill(ranges: list[Range], leaf_hashes: Sequence[bytes]) -> list[bytes]:
    return [subtree_root(leaf_hashes[s : s + n]) for s, n in ranges]


def inclusion_proof(leaf_hashes: Sequence[bytes], index: int) -> list[bytes]:
    return _fill(inclusion_ranges(index, len(leaf_hashes)), leaf_hashes)


def consistency_proof(leaf_hashes: Sequence[bytes], old_size: int) -> list[bytes]:
    return _fill(consistency_ranges(old_size, len(leaf_hashes)), leaf_hashes)


def _shift_until(fn: int, sn: int, done: Callable[[int], bool]) -> tuple[int, int]:
    while not done(fn):
        fn >>= 1
        sn >>= 1
    return fn, sn


def verify_inclusion(
    index: int, size: int, leaf_hash: bytes, proof: Sequence[bytes], root: bytes
) -> None:
    """RFC 9162 section 2.1.3.2. Raises ProofError unless `proof` shows that `leaf_hash`
    is leaf `index` of the tree of `size` leaves whose root is `root`."""
    if not (0 <= index < size) or any(len(p) != 32 for p in proof):
        raise ProofError("preuve d'inclusion invalide")
    fn, sn, r = index, size - 1, leaf_hash
    for p in proof:
        if sn == 0:
            raise ProofError("preuve d'inclusion invalide")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                fn, sn = _shift_until(fn, sn, lambda f: f & 1 == 1 or f == 0)
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0 or r != root:
        raise ProofError("preuve d'inclusion invalide")


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """RFC 9162 section 2.1.4.2. Raises ProofError unless `proof` shows that the tree of
    `old_size` leaves with root `old_root` is a prefix of the tree of `new_size` leaves
    with root `new_root`."""
    bad = ProofError("preuve de cohérence invalide")
    if old_size < 0 or new_size < old_size or any(len(p) != 32 for p in proof):
        raise bad
    if old_size == new_size:
        if proof or old_root != new_root:
            raise bad
        return
    if old_size == 0:
        if proof or old_root != EMPTY_ROOT:
            raise bad
        return
    if not proof:
        raise bad
    path = list(proof)
    if old_size & (old_size - 1) == 0:  # an exact power of two: its root starts the path
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    fn, sn = _shift_until(fn, sn, lambda f: f & 1 == 0)
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise bad
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                fn, sn = _shift_until(fn, sn, lambda f: f & 1 == 1 or f == 0)
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0 or fr != old_root or sr != new_root:
        raise bad
