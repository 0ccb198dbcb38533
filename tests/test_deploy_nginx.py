"""The shipped nginx site, deploy/nginx/securex.conf, in front of a real `securex serve`.

Only the lines marked CHANGE are substituted (the upstream, the listen ports on
loopback, the server name, a throwaway certificate, the log paths); everything else is
tested as shipped. Through HTTPS: HTTP answers 301 to HTTPS; the app sees the proxied
scheme (it sends HSTS) and its CSP; a demo officer logs in with a `Secure` session
cookie; /metrics is refused by nginx; a 20 MiB tus PATCH goes through in one request;
the file comes back from a recipient's link, whole and by range. Once nginx has
started, its temporary folders are replaced by plain files, so that any request body or
response nginx tried to spool to disk would fail: the transfers prove that no plaintext
touches the proxy's disk. The access log holds no path at all, hence no token.
"""

from __future__ import annotations

import hashlib
import http.client
import http.cookiejar
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyotp
import pytest

from tests.smtp import self_signed_certificate
from tests.test_serve import SECUREX, NoRedirect, free_port, server  # noqa: F401 (fixture)

SITE = Path(__file__).resolve().parents[1] / "deploy" / "nginx" / "securex.conf"
MIB = 2**20
# nginx's temporary folders, by directive: client_body_temp_path and the like.
TEMP_PATHS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


@pytest.fixture
def server_env() -> dict[str, str]:
    # gunicorn itself trusts X-Forwarded-Proto from 127.0.0.1 (its forwarded_allow_ips);
    # it does not from a proxy on another host, as in production. Turned off, so that
    # the scheme reaches the app through securex's own ProxyFix only.
    return {"SECUREX_SERVER_TRUSTED_PROXIES": "1", "FORWARDED_ALLOW_IPS": ""}


@pytest.fixture
def nginx() -> str:
    """The nginx command; its absence fails (before the server starts), never skips."""
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    if found is None:
        pytest.fail(
            "nginx is missing: install the Debian package « nginx » (make system-deps)",
            pytrace=False,
        )
    return found


def site_config(text: str, values: dict[tuple[str, str], str | None]) -> str:
    """The shipped site with each CHANGE line's arguments replaced by `values[(directive,
    arguments)]` (None: the line removed). Any other line is kept as it is; a CHANGE line
    this test does not know, or a value never used, fails."""
    used = set()
    lines = []
    for line in text.splitlines():
        if "# CHANGE" not in line:
            lines.append(line)
            continue
        match = re.fullmatch(r"(\s*)(\w+)\s+([^;]*);\s*# CHANGE.*", line)
        assert match, f"unexpected CHANGE line: {line!r}"
        indent, directive, arguments = match.groups()
        key = (directive, arguments)
        assert key in values, f"CHANGE line unknown to the test: {line!r}"
        used.add(key)
        if values[key] is not None:
            lines.append(f"{indent}{directive} {values[key]};")
    assert used == set(values), f"not in the shipped file: {set(values) - used}"
    return "\n".join(lines) + "\n"


@pytest.fixture
def proxy(nginx, server, tmp_path) -> Iterator[dict[str, Any]]:  # noqa: F811
    base, creds = server
    app_port = int(base.rsplit(":", 1)[1])
    work = tmp_path / "nginx"
    work.mkdir()
    cert, key = self_signed_certificate(work)
    http_port, https_port = free_port(), free_port()
    access, errors = work / "access.log", work / "error.log"
    site = site_config(
        SITE.read_text(),
        {
            ("server", "10.0.0.11:8000"): f"127.0.0.1:{app_port}",
            ("server", "10.0.0.12:8000"): None,
            ("listen", "80"): f"127.0.0.1:{http_port}",
            ("listen", "[::]:80"): None,
            ("listen", "443 ssl http2"): f"127.0.0.1:{https_port} ssl http2",
            ("listen", "[::]:443 ssl http2"): None,
            ("server_name", "etat-civil.syndicat.example"): "127.0.0.1",
            ("ssl_certificate", "/etc/ssl/securex/fullchain.pem"): str(cert),
            ("ssl_certificate_key", "/etc/ssl/securex/privkey.pem"): str(key),
            (
                "access_log",
                "/var/log/nginx/securex-access.log securex_private",
            ): f"{access} securex_private",
            ("error_log", "/var/log/nginx/securex-error.log crit"): f"{errors} crit",
        },
    )
    (work / "securex.conf").write_text(site)
    temp_paths = "\n".join(f"    {name}_temp_path {work / name};" for name in TEMP_PATHS)
    (work / "nginx.conf").write_text(
        f"""daemon off;
worker_processes 1;
pid {work / "nginx.pid"};
error_log {work / "main-error.log"} warn;
events {{
    worker_connections 128;
}}
http {{
{temp_paths}
    access_log off;
    include {work / "securex.conf"};
}}
"""
    )
    command = [nginx, "-p", str(work), "-c", str(work / "nginx.conf"), "-e", str(work / "e.log")]
    checked = subprocess.run([*command, "-t"], capture_output=True, text=True)
    assert checked.returncode == 0 and "test is successful" in checked.stderr, checked.stderr

    stderr = open(work / "stderr.log", "wb")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", https_port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    logs = [work / "e.log", work / "main-error.log", work / "stderr.log"]
                    pytest.fail(
                        "nginx did not start: "
                        + "".join(log.read_text() for log in logs if log.exists())
                    )
                time.sleep(0.1)
        # From now on, a temporary file would fail its request: nothing may be spooled.
        for name in TEMP_PATHS:
            shutil.rmtree(work / name)
            (work / name).write_text("not a folder: nginx must not write temporary files\n")
        tls = ssl.create_default_context(cafile=str(cert))
        yield {
            "http_port": http_port,
            "https_port": https_port,
            "base": f"https://127.0.0.1:{https_port}",
            "tls": tls,
            "access": access,
            "errors": errors,
            "creds": creds,
        }
    finally:
        proc.send_signal(signal.SIGTERM)  # nginx's fast shutdown
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        stderr.close()


def https(
    px: dict[str, Any],
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, http.client.HTTPMessage, bytes]:
    conn = http.client.HTTPSConnection("127.0.0.1", px["https_port"], context=px["tls"], timeout=60)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.headers, response.read()
    finally:
        conn.close()


def personal_token(tmp_path: Path, database_url: str, email: str) -> str:
    env = {
        **os.environ,
        "SECUREX_INSTANCE": str(tmp_path / "inst"),
        "SECUREX_DATABASE_URL": database_url,
    }
    out = subprocess.run(
        [SECUREX, "token", "add", email, "--name", "nginx"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return next(word for word in out.split() if word.startswith("sxp_"))


def test_the_shipped_site_in_front_of_securex(proxy, tmp_path, database_url):
    px = proxy
    creds = px["creds"]
    secrets: list[str] = []

    # Port 80 only redirects, to the same path on HTTPS.
    conn = http.client.HTTPConnection("127.0.0.1", px["http_port"], timeout=10)
    conn.request("GET", "/login?suite=1")
    response = conn.getresponse()
    response.read()
    conn.close()
    assert response.status == 301
    assert response.headers["Location"] == "https://127.0.0.1/login?suite=1"

    # /metrics and /readyz never reach the app (which would add its CSP), however spelt.
    for path in ("/metrics", "/%6detrics", "//metrics", "/metrics?format=text", "/readyz"):
        status, headers, _ = https(px, "GET", path)
        assert status == 404 and "Content-Security-Policy" not in headers, path

    # The app sees HTTPS through X-Forwarded-Proto: HSTS and its CSP, a Secure cookie.
    jar = http.cookiejar.CookieJar()
    browser = urllib.request.build_opener(
        urllib.request.HTTPSHandler(context=px["tls"]),
        urllib.request.HTTPCookieProcessor(jar),
        NoRedirect,
    )

    def fetch(path: str, data: dict[str, str] | None = None, **headers: str):
        body = urllib.parse.urlencode(data).encode() if data is not None else None
        request = urllib.request.Request(px["base"] + path, data=body, headers=headers)
        try:
            with browser.open(request, timeout=60) as answer:
                return answer.status, answer.headers, answer.read()
        except urllib.error.HTTPError as exc:  # 3xx and 4xx land here with NoRedirect
            with exc:
                return exc.code, exc.headers, exc.read()

    def csrf(html: bytes) -> str:
        found = re.search(rb'name="csrf_token" type="hidden" value="([^"]+)"', html)
        assert found, html[:500]
        return found.group(1).decode()

    status, headers, html = fetch("/login")
    assert status == 200 and b"Connexion" in html
    assert headers["Strict-Transport-Security"] == "max-age=63072000; includeSubDomains"
    assert len(headers.get_all("Strict-Transport-Security")) == 1
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    cookie = headers["Set-Cookie"]
    assert "Secure" in cookie and "HttpOnly" in cookie
    login_request_id = headers["X-Request-ID"]  # nginx's $request_id, echoed by the app

    officer = next(u for u in creds["users"] if u["email"] == "officier.dax@demo.securex.fr")
    status, headers, _ = fetch(
        "/login",
        {"csrf_token": csrf(html), "email": officer["email"], "password": officer["password"]},
    )
    assert status == 302 and headers["Location"].endswith("/login/totp")
    status, _, html = fetch("/login/totp")
    code = pyotp.TOTP(officer["totp_secret"]).now()
    status, _, _ = fetch("/login/totp", {"csrf_token": csrf(html), "code": code})
    assert status == 302
    status, _, html = fetch("/")
    assert status == 200 and b"Dax" in html

    # A 20 MiB file in one tus PATCH, with an agent's personal token.
    agent = next(u for u in creds["users"] if u["email"] == "agent.mont-de-marsan@demo.securex.fr")
    token = personal_token(tmp_path, database_url, agent["email"])
    secrets.append(token)
    api = {"Authorization": f"Bearer {token}", "Tus-Resumable": "1.0.0"}
    content = os.urandom(20 * MIB + 3)
    status, headers, _ = https(
        px,
        "POST",
        "/api/v1/uploads",
        headers={**api, "Upload-Length": str(len(content)), "Upload-Metadata": "filename YS5iaW4="},
    )
    assert status == 201
    location = headers["Location"]
    secrets.append(location.rsplit("/", 1)[1])
    status, headers, answer = https(
        px,
        "PATCH",
        location,
        content,
        {**api, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"},
    )
    assert status == 204, answer
    assert headers["Upload-Offset"] == str(len(content))

    # An ordinary route takes a larger body unbuffered too: 5 MiB that are not a PDF, to
    # the notary's validation, get the app's report.
    notary = next(c for c in creds["api_clients"] if c["category"] == "notaire")
    secrets.append(notary["token"])
    status, _, answer = https(
        px,
        "POST",
        "/api/v1/validate",
        os.urandom(5 * MIB),
        {"Authorization": f"Bearer {notary['token']}", "Content-Type": "application/pdf"},
    )
    assert status == 200 and json.loads(answer)["ok"] is False, answer

    # Sent to the officer, who opens it with their account and downloads it.
    body = json.dumps(
        {
            "recipients": [officer["email"]],
            "subject": "Registre",
            "files": [{"upload": location.rsplit("/", 1)[1]}],
        }
    ).encode()
    status, _, answer = https(
        px, "POST", "/api/v1/sends", body, {**api, "Content-Type": "application/json"}
    )
    assert status == 201, answer
    pli = json.loads(answer)["id"]
    deadline = time.monotonic() + 30
    while True:  # the server's worker thread prepares it
        _, _, answer = https(px, "GET", f"/api/v1/sends/{pli}", headers=api)
        sent = json.loads(answer)
        if sent["status"] == "sent" or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert sent["status"] == "sent"
    assert sent["files"][0]["sha256"] == hashlib.sha256(content).hexdigest()

    status, headers, _ = fetch(f"/plis/recus/{pli}")
    assert status == 302
    link = urllib.parse.urlsplit(headers["Location"]).path
    secrets.append(link.rsplit("/", 1)[1])
    status, _, html = fetch(link)
    assert status == 200
    status, headers, _ = fetch(f"{link}/compte", {"csrf_token": csrf(html)})
    assert status == 303
    status, _, html = fetch(f"{link}/pli")
    assert status == 200
    found = re.search(rf'href="({re.escape(link)}/fichiers/\d+)"'.encode(), html)
    assert found, html[:2000]
    status, headers, data = fetch(found.group(1).decode())
    assert status == 200 and data == content
    status, headers, data = fetch(found.group(1).decode(), Range="bytes=10485760-10489855")
    assert status == 206 and data == content[10485760:10489856]
    assert headers["Content-Range"] == f"bytes 10485760-10489855/{len(content)}"

    # Paths with secrets in them, answered by the app.
    for path in ("/verifier/K7QF-2MXC-9TRA", "/depot/Zx9depotTokenNeverLogged"):
        status, _, _ = fetch(path)
        assert status in (404, 410), path
    secrets += ["K7QF-2MXC-9TRA", "Zx9depotTokenNeverLogged"]

    # The access log: one JSON line per request, with its id, and never a path.
    deadline = time.monotonic() + 5
    while True:  # nginx writes the line once the request is over
        lines = px["access"].read_text().splitlines()
        if len(lines) >= 23 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    logged = [json.loads(line) for line in lines]
    assert len(logged) >= 23
    assert all(re.fullmatch(r"[0-9a-f]{32}", entry["request_id"]) for entry in logged)
    assert login_request_id in {entry["request_id"] for entry in logged}
    assert {entry["status"] for entry in logged} >= {200, 201, 204, 206, 301, 302, 303, 404}
    text = "\n".join(lines)
    errors = px["errors"].read_text() if px["errors"].exists() else ""
    assert "/" not in text
    for secret in secrets:
        assert secret not in text and secret not in errors, secret
