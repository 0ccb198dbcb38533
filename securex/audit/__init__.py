"""The audit trail: an append-only, hash-chained event log (no Flask in here).

Every operation that changes, reads, signs, sends or delivers something calls
`record()` in the same transaction as the change; `verify_chain()` proves that no
row was edited, deleted, inserted or reordered since.
"""

from securex.audit.events import EventType
from securex.audit.log import ChainReport, canonical_encoding, record, verify_chain

__all__ = ["ChainReport", "EventType", "canonical_encoding", "record", "verify_chain"]
