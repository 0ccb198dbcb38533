"""Blob storage: where encrypted objects live. Only ciphertext ever reaches a store.

`FilesystemBlobStore` writes to a temporary name, fsyncs, renames, then fsyncs the
folder, so a crash leaves either nothing or a complete blob; the database row that
references a blob is committed only after that. Blobs without a row (a crash between
the two) and stale temporary files are removed by `securex vault gc`.

An S3-compatible backend needs the same five operations; `commit` maps to a single
PUT (or a completed multipart upload), which object stores make atomic.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import BinaryIO, Protocol

from securex.vault.errors import IntegrityError

TMP_PREFIX = ".tmp-"


class BlobStore(Protocol):
    def writer(self, name: str) -> AbstractContextManager[BinaryIO]:
        """Context manager: a file to write; the blob appears whole when the block ends
        without error, and not at all otherwise."""
        ...

    def open(self, name: str) -> BinaryIO: ...

    def delete(self, name: str) -> None: ...

    def names(self) -> Iterator[tuple[str, float]]:
        """Every committed blob with its modification time."""
        ...

    def collect_temporaries(self, older_than: float) -> int: ...


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FilesystemBlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, name: str) -> Path:
        if not name.isalnum() or len(name) < 4:
            raise ValueError(f"invalid blob name {name!r}")
        return self.root / name[:2] / name[2:4] / name

    @contextmanager
    def writer(self, name: str) -> Iterator[BinaryIO]:
        final = self._path(name)
        final.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = final.with_name(f"{TMP_PREFIX}{name}-{secrets.token_hex(4)}")
        fh = open(tmp, "xb")  # noqa: SIM115 (closed in every path below)
        try:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
            fh.close()
            os.rename(tmp, final)
            _fsync_dir(final.parent)
        except BaseException:
            fh.close()
            tmp.unlink(missing_ok=True)
            raise

    def open(self, name: str) -> BinaryIO:
        try:
            return open(self._path(name), "rb")
        except FileNotFoundError:
            raise IntegrityError() from None  # the same answer as any other damage

    def delete(self, name: str) -> None:
        path = self._path(name)
        path.unlink(missing_ok=True)

    def names(self) -> Iterator[tuple[str, float]]:
        if not self.root.exists():
            return
        for path in self.root.glob("??/??/*"):
            if not path.name.startswith(TMP_PREFIX):
                yield path.name, path.stat().st_mtime

    def collect_temporaries(self, older_than: float) -> int:
        count = 0
        limit = time.time() - older_than
        for path in self.root.glob(f"??/??/{TMP_PREFIX}*"):
            if path.stat().st_mtime < limit:
                path.unlink(missing_ok=True)
                count += 1
        return count
