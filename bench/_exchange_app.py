"""The server that bench/exchange.py measures: securex's own application
(`securex.app.create_app`), run by gunicorn with `securex serve`'s options and runner
(`securex.cli.gunicorn_options`, `run_gunicorn`), plus one bench-only blueprint that
moves the same bytes with no encryption, the reference of the same run:

    PUT /bench/plain/<name>   the body, read 256 KiB at a time as a tus PATCH reads it
                              (`securex.exchange.tus.body_chunks`), written to
                              <instance>/bench-plain/<name> (the disk of the vault's
                              blobs), fsynced at the end  → 201
    GET /bench/plain/<name>   that file, read and sent 1 MiB at a time (a vault
                              segment's size)  → 200

Both go through the same gunicorn workers, Flask application and middleware as the
exchange's routes; what they leave out is the vault (encryption and decryption, the
upload's part and its checkpoints) and the database (tus bookkeeping, the pli, the
download's records). No authentication: it is started by the bench only, on loopback,
in a throwaway instance, and is never part of a deployment.

    .venv/bin/python bench/_exchange_app.py --port N [--workers 2]

(with SECUREX_INSTANCE and the other settings in the environment, as for `securex serve`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MIB = 2**20
FOLDER = "bench-plain"


def create_bench_app() -> Any:
    """The application with the plain routes. Called by gunicorn in each worker after
    the fork, like `securex serve`'s factory: Flask and the application are imported
    there, so the master process holds what `securex serve`'s master holds."""
    import os
    import re

    from flask import Blueprint, Response, abort, request

    from securex.app import create_app
    from securex.exchange.tus import body_chunks, policy
    from securex.web import register
    from securex.web.context import state

    bp = Blueprint("bench_plain", __name__)
    bp.csrf_exempt = True  # type: ignore[attr-defined]  # no cookie, no form: a raw body

    def path_of(name: str) -> Path:
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", name):
            abort(404)
        return Path(state().settings.instance) / FOLDER / name

    @bp.put("/bench/plain/<name>")
    def put(name: str) -> Any:
        # The same body limit as a tus PATCH (the application's default is 1 MiB).
        request.max_content_length = policy().max_file_bytes
        path = path_of(name)
        path.parent.mkdir(exist_ok=True, mode=0o700)
        size = 0
        with open(path, "wb") as fh:
            for chunk in body_chunks():
                fh.write(chunk)
                size += len(chunk)
            fh.flush()
            os.fsync(fh.fileno())
        return {"bytes": size}, 201

    @bp.get("/bench/plain/<name>")
    def get(name: str) -> Any:
        path = path_of(name)
        if not path.is_file():
            abort(404)

        def body() -> Any:
            with open(path, "rb") as fh:
                while chunk := fh.read(MIB):
                    yield chunk

        return Response(
            body(),
            headers={"Content-Length": str(path.stat().st_size), "Cache-Control": "no-store"},
            content_type="application/octet-stream",
        )

    app = create_app()
    register(app, bp)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args()

    from securex.cli import gunicorn_options, run_gunicorn
    from securex.config import load_settings
    from securex.instance import load_instance_secret

    settings = load_settings()
    load_instance_secret(settings.instance)  # as `securex serve`: a clear error first
    options = gunicorn_options(settings, "127.0.0.1", args.port, args.workers)
    run_gunicorn(options, create_bench_app)


if __name__ == "__main__":
    main()
