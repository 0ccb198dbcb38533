"""The audit log's Merkle tree, kept in the database: every complete subtree hash in
`audit_nodes`, the right edge ("frontier") in `audit_head`. Appending writes the leaf
and the subtrees it completes (two rows on average); a proof or a past root reads the
O(log n) complete subtrees its plan needs, in one query. Nothing rescans the log."""

from __future__ import annotations

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from securex.audit.merkle import (
    EMPTY_ROOT,
    Range,
    consistency_ranges,
    inclusion_ranges,
    node_hash,
)
from securex.audit.models import AuditNode

Node = tuple[int, int]  # (level, index)


def _levels(size: int) -> list[int]:
    return [level for level in range(size.bit_length()) if size >> level & 1]


def parse_frontier(size: int, blob: bytes) -> dict[int, bytes]:
    levels = _levels(size)
    if len(blob) != 32 * len(levels):
        raise ValueError("audit frontier does not match the tree size")
    return {level: blob[32 * i : 32 * (i + 1)] for i, level in enumerate(levels)}


def dump_frontier(frontier: dict[int, bytes]) -> bytes:
    return b"".join(frontier[level] for level in sorted(frontier))


def frontier_root(size: int, blob: bytes) -> bytes:
    """The root of the whole tree, from its right edge alone."""
    return fold_frontier(parse_frontier(size, blob))


def push(frontier: dict[int, bytes], size: int, leaf: bytes) -> list[tuple[int, int, bytes]]:
    """Append leaf number `size` to a right edge, in place; returns the nodes it
    completes as (level, index, hash), the leaf first."""
    made = [(0, size, leaf)]
    h, level, i = leaf, 0, size
    while i & 1:
        h = node_hash(frontier.pop(level), h)
        level, i = level + 1, i >> 1
        made.append((level, i, h))
    frontier[level] = h
    return made


def fold_frontier(frontier: dict[int, bytes]) -> bytes:
    root: bytes | None = None
    for level in sorted(frontier):  # lowest (rightmost) first
        root = frontier[level] if root is None else node_hash(frontier[level], root)
    return EMPTY_ROOT if root is None else root


def _pieces(start: int, n: int) -> list[Node]:
    """The complete subtrees that make up leaves [start, start + n), left to right, in
    the shape RFC 9162 gives that range."""
    nodes: list[Node] = []
    while True:
        if n & (n - 1) == 0:
            level = n.bit_length() - 1
            nodes.append((level, start >> level))
            return nodes
        k = 1 << ((n - 1).bit_length() - 1)
        level = k.bit_length() - 1
        nodes.append((level, start >> level))
        start, n = start + k, n - k


def _fold(hashes: list[bytes]) -> bytes:
    root = hashes[-1]
    for h in reversed(hashes[:-1]):
        root = node_hash(h, root)
    return root


def range_hashes(session: Session, ranges: list[Range]) -> list[bytes]:
    """The subtree hash of each range, from the stored nodes (one query)."""
    plans = [_pieces(start, n) for start, n in ranges]
    wanted = sorted({node for plan in plans for node in plan})
    found: dict[Node, bytes] = {}
    # One `level = ? AND idx IN (...)` per level: primary-key lookups on every engine
    # (SQLite runs a row-value IN over a VALUES list as a full scan).
    by_level: dict[int, list[int]] = {}
    for level, idx in wanted:
        by_level.setdefault(level, []).append(idx)
    conditions = [
        and_(AuditNode.level == level, AuditNode.idx.in_(idxs)) for level, idxs in by_level.items()
    ]
    if conditions:
        rows = session.execute(
            select(AuditNode.level, AuditNode.idx, AuditNode.hash).where(or_(*conditions))
        )
        found.update({(lv, ix): h for lv, ix, h in rows})
    missing = [node for node in wanted if node not in found]
    if missing:
        raise LookupError(f"audit tree nodes missing: {missing[:3]}")
    return [_fold([found[node] for node in plan]) for plan in plans]


def inclusion_proof_at(session: Session, index: int, size: int) -> list[bytes]:
    return range_hashes(session, inclusion_ranges(index, size))


def consistency_proof_at(session: Session, old_size: int, new_size: int) -> list[bytes]:
    return range_hashes(session, consistency_ranges(old_size, new_size))


def root_at(session: Session, size: int) -> bytes:
    """The root the tree had when it held `size` leaves."""
    if size == 0:
        return EMPTY_ROOT
    return range_hashes(session, [(0, size)])[0]


def leaf_at(session: Session, index: int) -> bytes | None:
    row = session.get(AuditNode, (0, index))
    return None if row is None else row.hash
