"""Blob storage: where encrypted objects live. Only ciphertext ever reaches a store.

`FilesystemBlobStore` writes to a temporary name, fsyncs, renames, then fsyncs the
folder, so a crash leaves either nothing or a complete blob; the database row that
references a blob is committed only after that. Blobs without a row (a crash between
the two) and stale temporary files are removed by `securex vault gc`.

An S3-compatible backend needs the same five operations; `commit` maps to a single
PUT (or a completed multipart upload), which object stores make atomic. `probe` answers
the readiness check (`/readyz`): a small object written and deleted.

Resumable uploads (`securex.vault.upload`) write an object over several requests into a
*part*: a blob that is not an object yet, kept apart from the committed blobs (its own
folder here) so that neither `names` nor `Vault.gc` ever sees it, and promoted to a blob
of the same name by `finish_part`. Abandoned parts are removed by `collect_parts`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import BinaryIO, Protocol

from securex.errors import InsufficientStorage
from securex.vault.errors import IntegrityError

TMP_PREFIX = ".tmp-"
PARTS_DIR = "parts"
NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


@contextmanager
def space_errors() -> Iterator[None]:
    """A full disk (or quota) met while writing blobs or parts, as the typed
    `InsufficientStorage` (507); every other error passes unchanged. Whoever wrote
    removes what it wrote: `writer` its temporary file, the caller of a part the part."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in NO_SPACE:
            raise
        raise InsufficientStorage(
            "Espace de stockage insuffisant sur le serveur : le fichier n'a pas été "
            "enregistré. Réessayez plus tard ; si cela se reproduit, prévenez "
            "l'administrateur de la plateforme."
        ) from exc


class BlobStore(Protocol):
    """Where blobs live. Only ciphertext is ever handed to a store.

    Parts (resumable uploads) need six more operations. What an S3-compatible backend
    must provide for them:

    - a part is a multipart upload under the blob's key (its UploadId kept by the backend,
      e.g. in a small side object), which object stores keep invisible until completed;
    - `sync_part` must make what was written durable, but S3 parts other than the last
      must be at least 5 MiB: the backend buffers sealed bytes and uploads a part of
      5 MiB or more per group of whole segments, and keeps the unaligned remainder
      (less than 5 MiB) durable as a separate small object rewritten at each sync, or the
      caller picks `checkpoint_bytes` as a multiple of the part size;
    - `open_part(name, size)` positions writes at `size` by re-uploading part numbers from
      there on (a re-uploaded part number replaces the old one). The vault reads the
      bytes beyond `size` back, to refuse a resumed upload that would re-seal a segment
      with other content (a nonce reuse). Parts of an incomplete multipart upload cannot
      be read: such a backend reports no bytes beyond `size`, and the protection then
      rests on S3 discarding replaced parts (it does not hold against someone who copied
      the earlier part meanwhile). The first bytes (the header) must read back, to check
      that the state and the part belong together: keep them in the side object too;
    - `finish_part` is CompleteMultipartUpload of the parts up to `size` (atomic);
    - `delete_part` is AbortMultipartUpload; `collect_parts` lists incomplete multipart
      uploads initiated before the grace period and aborts them (a bucket lifecycle rule
      AbortIncompleteMultipartUpload does the same).
    """

    def writer(self, name: str) -> AbstractContextManager[BinaryIO]:
        """Context manager: a file to write; the blob appears whole when the block ends
        without error, and not at all otherwise."""
        ...

    def open(self, name: str) -> BinaryIO:
        """The blob to read; it must be seekable (range reads jump to a segment; an S3
        backend serves a seek with a ranged GET)."""
        ...

    def delete(self, name: str) -> None: ...

    def names(self) -> Iterator[tuple[str, float]]:
        """Every committed blob with its modification time."""
        ...

    def collect_temporaries(self, older_than: float) -> int: ...

    def probe(self) -> None:
        """Raise (`OSError`, or the backend's own error) unless the store takes a blob
        now: quick, bounded, and leaving nothing behind. It must not create the store:
        an unmounted volume or a missing bucket has to show."""
        ...

    def create_part(self, name: str, head: bytes) -> None:
        """A new part holding `head`, durable when this returns. `FileExistsError` if a
        part of that name exists."""
        ...

    def open_part(self, name: str, size: int) -> BinaryIO:
        """The part opened for reading and writing, positioned at `size`, the durable
        length the caller recorded. Bytes beyond `size` (written after the caller's last
        checkpoint, before a crash) are left in place for the caller to read and
        overwrite. `IntegrityError` if the part is missing or shorter than `size`."""
        ...

    def sync_part(self, fh: BinaryIO) -> None:
        """Make everything written through `fh` (from `open_part`) durable."""
        ...

    def finish_part(self, name: str, size: int) -> None:
        """Cut the part to `size` and promote it, atomically, to the blob `name`.
        Idempotent: done again after success (the caller's transaction failed), it finds
        the blob and returns. `IntegrityError` if neither a long enough part nor the
        blob exists."""
        ...

    def delete_part(self, name: str) -> None:
        """Remove the part if it exists."""
        ...

    def collect_parts(self, older_than: float) -> int:
        """Remove parts not written to for `older_than` seconds; return how many."""
        ...


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
            # Closing flushes what is buffered, which fails again on a full disk: the
            # temporary file must go whatever close says.
            with contextlib.suppress(OSError):
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
        # Blobs being written, and the probe files of a process that died in `probe`.
        for pattern in (f"??/??/{TMP_PREFIX}*", f"{TMP_PREFIX}*"):
            for path in self.root.glob(pattern):
                if path.stat().st_mtime < limit:
                    path.unlink(missing_ok=True)
                    count += 1
        return count

    def probe(self) -> None:
        """Create, write and delete a small file at the top of the store, beside the
        blobs' folders (on the same file system). The folder itself is never created
        here: a volume that is not mounted must fail, not get an empty folder."""
        if not self.root.is_dir():
            raise FileNotFoundError("the blob folder is missing")
        path = self.root / f"{TMP_PREFIX}probe-{secrets.token_hex(8)}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, b"securex readiness probe\n")
        finally:
            os.close(fd)
            path.unlink(missing_ok=True)

    # --- parts (resumable uploads) ---------------------------------------------------

    def _part_path(self, name: str) -> Path:
        if not name.isalnum() or len(name) < 4:
            raise ValueError(f"invalid blob name {name!r}")
        return self.root / PARTS_DIR / name

    def create_part(self, name: str, head: bytes) -> None:
        path = self._part_path(name)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            view = memoryview(head)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise
        os.close(fd)
        _fsync_dir(path.parent)

    def open_part(self, name: str, size: int) -> BinaryIO:
        try:
            fh = open(self._part_path(name), "r+b")  # noqa: SIM115 (returned to the caller)
        except FileNotFoundError:
            raise IntegrityError() from None
        if os.fstat(fh.fileno()).st_size < size:
            fh.close()
            raise IntegrityError() from None  # bytes recorded as durable are gone
        fh.seek(size)
        return fh

    def sync_part(self, fh: BinaryIO) -> None:
        fh.flush()
        os.fsync(fh.fileno())

    def finish_part(self, name: str, size: int) -> None:
        part = self._part_path(name)
        final = self._path(name)
        try:
            fd = os.open(part, os.O_RDWR)
        except FileNotFoundError:
            if final.exists() and final.stat().st_size == size:
                return  # promoted already
            raise IntegrityError() from None
        try:
            if os.fstat(fd).st_size < size:
                raise IntegrityError()
            os.ftruncate(fd, size)
            # The blob keeps the part's modification time: make it now, so that `Vault.gc`
            # does not take a long upload's fresh blob for an old orphan before the commit.
            os.utime(fd)
            os.fsync(fd)
        finally:
            os.close(fd)
        final.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.rename(part, final)
        _fsync_dir(final.parent)
        _fsync_dir(part.parent)

    def delete_part(self, name: str) -> None:
        self._part_path(name).unlink(missing_ok=True)

    def collect_parts(self, older_than: float) -> int:
        folder = self.root / PARTS_DIR
        if not folder.exists():
            return 0
        count = 0
        limit = time.time() - older_than
        for path in folder.iterdir():
            try:
                old = path.stat().st_mtime < limit
            except FileNotFoundError:  # finished or aborted meanwhile
                continue
            if old:
                path.unlink(missing_ok=True)
                count += 1
        return count
