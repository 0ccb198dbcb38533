"""Resumable uploads through the real server (`securex serve`, gunicorn): a client whose
connection drops at 80 % of a PATCH finds, with HEAD, everything that arrived kept,
and finishes from there; the file sent is then exactly the one uploaded. And a
transfer may last longer than gunicorn's timeout (3 s here): only a worker that stops
answering is restarted, never a slow but healthy request."""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import socket
import subprocess
import time

import pytest

from tests.test_serve import SECUREX, server  # noqa: F401 (the fixture)

TIMEOUT = 3


@pytest.fixture
def server_env() -> dict[str, str]:
    return {"SECUREX_SERVER_TIMEOUT": str(TIMEOUT)}


def _token(base_env: dict[str, str], email: str) -> str:
    out = subprocess.run(
        [SECUREX, "token", "add", email, "--name", "test"],
        env=base_env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return next(word for word in out.split() if word.startswith("sxp_"))


def _request(
    port: int, method: str, path: str, token: str, body: bytes | None = None, **headers: str
):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request(
            method,
            path,
            body=body,
            headers={"Authorization": f"Bearer {token}", "Tus-Resumable": "1.0.0", **headers},
        )
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def test_a_dropped_connection_resumes_where_it_stopped(server, tmp_path, database_url):  # noqa: F811
    base, creds = server
    port = int(base.rsplit(":", 1)[1])
    agent = next(u for u in creds["users"] if u["role"] == "agent")
    env = {
        **os.environ,
        "SECUREX_INSTANCE": str(tmp_path / "inst"),
        "SECUREX_DATABASE_URL": database_url,
    }
    token = _token(env, agent["email"])
    content = os.urandom(12 * 2**20 + 7)
    name = base64.b64encode(b"registre.pdf").decode()
    status, headers, _ = _request(
        port,
        "POST",
        "/api/v1/uploads",
        token,
        **{"Upload-Length": str(len(content)), "Upload-Metadata": f"filename {name}"},
    )
    assert status == 201
    location = headers["Location"]

    # 80 % of the body, then the connection drops (no more bytes, socket closed).
    cut = int(len(content) * 0.8)
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        head = (
            f"PATCH {location} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {token}\r\nTus-Resumable: 1.0.0\r\n"
            f"Upload-Offset: 0\r\nContent-Type: application/offset+octet-stream\r\n"
            f"Content-Length: {len(content)}\r\n\r\n"
        ).encode()
        sock.sendall(head + content[:cut])
        sock.shutdown(socket.SHUT_WR)
        time.sleep(0.5)

    deadline = time.monotonic() + 30
    while True:  # the server notices the drop, keeps what arrived and frees the upload
        status, headers, _ = _request(port, "HEAD", location, token)
        assert status == 200
        offset = int(headers["Upload-Offset"])
        if offset == cut or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert offset == cut

    status, headers, _ = _request(
        port,
        "PATCH",
        location,
        token,
        content[offset:],
        **{"Upload-Offset": str(offset), "Content-Type": "application/offset+octet-stream"},
    )
    assert status == 204 and headers["Upload-Offset"] == str(len(content))

    body = json.dumps(
        {
            "recipients": ["archives@departement.example.fr"],
            "subject": "Registre numérisé",
            "files": [{"upload": location.rsplit("/", 1)[1]}],
        }
    ).encode()
    status, _, answer = _request(
        port, "POST", "/api/v1/sends", token, body, **{"Content-Type": "application/json"}
    )
    assert status == 201, answer
    send_id = json.loads(answer)["id"]
    deadline = time.monotonic() + 30
    while True:  # the worker thread of the server checksums the file it stored
        _, _, answer = _request(port, "GET", f"/api/v1/sends/{send_id}", token)
        sha = json.loads(answer)["files"][0]["sha256"]
        if sha or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert sha == hashlib.sha256(content).hexdigest()


def test_a_slow_upload_outlasts_the_servers_timeout(server, tmp_path, database_url):  # noqa: F811
    base, creds = server
    port = int(base.rsplit(":", 1)[1])
    agent = next(u for u in creds["users"] if u["role"] == "agent")
    env = {
        **os.environ,
        "SECUREX_INSTANCE": str(tmp_path / "inst"),
        "SECUREX_DATABASE_URL": database_url,
    }
    token = _token(env, agent["email"])
    piece, pieces = 256 * 1024, 12
    status, headers, _ = _request(
        port, "POST", "/api/v1/uploads", token, **{"Upload-Length": str(piece * pieces)}
    )
    assert status == 201
    location = headers["Location"]
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.putrequest("PATCH", location)
    for name, value in {
        "Authorization": f"Bearer {token}",
        "Tus-Resumable": "1.0.0",
        "Upload-Offset": "0",
        "Content-Type": "application/offset+octet-stream",
        "Content-Length": str(piece * pieces),
    }.items():
        conn.putheader(name, value)
    conn.endheaders()
    started = time.monotonic()
    for _ in range(pieces):  # about 6 s: twice the timeout
        conn.send(os.urandom(piece))
        time.sleep(0.5)
    response = conn.getresponse()
    assert time.monotonic() - started > 2 * TIMEOUT
    assert response.status == 204
    assert response.getheader("Upload-Offset") == str(piece * pieces)
    conn.close()
