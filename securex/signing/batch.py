"""Signing files, one or many. A batch uses every core: each worker process loads the
officer's key, the PKI and the validation data once, then signs file after file."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import secrets
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from securex.config import load_settings
from securex.db import utcnow
from securex.errors import SecurexError
from securex.signing import pades
from securex.signing.setup import appearance_for, load_demo_pki, signing_setup


@dataclass(frozen=True)
class Job:
    """What every file of a run is signed with (picklable, for worker processes)."""

    instance: str
    email: str
    officer: str
    commune: str
    level: str


@dataclass(frozen=True)
class Outcome:
    source: Path
    output: Path
    ok: bool
    level: str
    digest: str = ""
    error: str = ""


class _Worker:
    def __init__(self, job: Job) -> None:
        settings = load_settings(overrides={"instance": job.instance})
        self.settings = settings
        now = utcnow()
        pki = load_demo_pki(settings.instance)
        self.setup = signing_setup(
            settings,
            pki=pki,
            email=job.email,
            level=pades.Level.parse(job.level),
            now=now,
            environ=os.environ,
        )
        pades.check_signer(self.setup, now)
        self.appearance = appearance_for(settings, officer=job.officer, commune=job.commune)

    def sign(self, source: Path, output: Path) -> Outcome:
        level = self.setup.level.value
        try:
            signed = pades.sign(source.read_bytes(), self.setup, self.appearance, utcnow())
        except SecurexError as exc:
            return Outcome(source, output, False, level, error=exc.detail)
        except OSError as exc:
            return Outcome(source, output, False, level, error=f"lecture impossible ({exc})")
        tmp = output.with_name(f".{output.name}.{secrets.token_hex(4)}.part")
        try:
            with open(tmp, "xb") as fh:
                fh.write(signed)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, output)
        finally:
            tmp.unlink(missing_ok=True)
        return Outcome(source, output, True, level, hashlib.sha256(signed).hexdigest())


_worker: _Worker | None = None


def _sign_in_worker(pair: tuple[Path, Path]) -> Outcome:
    assert _worker is not None
    return _worker.sign(*pair)


def sign_one(job: Job, source: Path, output: Path) -> Outcome:
    outcome = _Worker(job).sign(source, output)
    if not outcome.ok:
        raise pades.SigningRefused(outcome.error)
    return outcome


def sign_many(
    job: Job, files: Sequence[Path], outdir: Path, workers: int | None = None
) -> Iterator[Outcome]:
    """Sign `files` into `outdir` (same names), yielding outcomes in order. The signer
    is loaded and checked (validity, revocation) once, here; the worker processes are
    forked from this one and inherit it, so they start signing at once."""
    global _worker
    pairs = [(f, outdir / f.name) for f in files]
    _worker = _Worker(job)  # fails fast, in this process, on a bad signer or configuration
    count = min(workers or os.cpu_count() or 1, len(pairs))
    try:
        if count <= 1:
            for pair in pairs:
                yield _worker.sign(*pair)
            return
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(max_workers=count, mp_context=context) as pool:
            yield from pool.map(_sign_in_worker, pairs, chunksize=max(1, len(pairs) // (count * 8)))
    finally:
        _worker = None
