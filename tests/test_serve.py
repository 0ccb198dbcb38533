"""The real thing: `securex init --demo`, then `securex serve` (gunicorn, two workers),
then a demo officer logs in over HTTP and the demo notary calls the API."""

from __future__ import annotations

import http.cookiejar
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pyotp
import pytest

SECUREX = str(Path(sys.executable).with_name("securex"))


class LoopbackIsSecure(http.cookiejar.DefaultCookiePolicy):
    """Browsers send Secure cookies to http://127.0.0.1; so does this jar."""

    def return_ok_secure(self, cookie, request):  # type: ignore[no-untyped-def]
        host = urllib.parse.urlsplit(request.get_full_url()).hostname
        return host == "127.0.0.1" or super().return_ok_secure(cookie, request)


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def server_env() -> dict[str, str]:
    """Settings given to the server through its environment (a module overrides it)."""
    return {}


@pytest.fixture
def server(tmp_path, database_url, server_env):
    env = {
        **os.environ,
        "SECUREX_INSTANCE": str(tmp_path / "inst"),
        "SECUREX_DATABASE_URL": database_url,
        **server_env,
    }
    subprocess.run([SECUREX, "init", "--demo"], env=env, check=True, capture_output=True)
    port = free_port()
    log = open(tmp_path / "serve.log", "wb")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(
        [SECUREX, "serve", "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(base + "/healthz", timeout=2) as response:
                response.read()
            break
        except OSError:  # refused, reset, timed out (URLError is one too)
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail(
                    "securex serve did not start: "
                    + (tmp_path / "serve.log").read_text(errors="replace")
                )
            time.sleep(0.2)
    credentials = json.loads((tmp_path / "inst" / "demo-credentials.json").read_text())
    yield base, credentials
    proc.terminate()
    proc.wait(timeout=30)
    log.close()


def test_demo_officer_logs_in_and_notary_calls_the_api(server):
    base, creds = server
    jar = http.cookiejar.CookieJar(policy=LoopbackIsSecure())
    browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar), NoRedirect)

    def fetch(path: str, data: dict | None = None):
        body = urllib.parse.urlencode(data).encode() if data is not None else None
        try:
            with browser.open(base + path, data=body, timeout=10) as response:
                return response.status, response.headers, response.read().decode()
        except urllib.error.HTTPError as exc:  # 3xx and 4xx land here with NoRedirect
            with exc:
                return exc.code, exc.headers, exc.read().decode()

    status, headers, html = fetch("/login")
    assert status == 200 and "Connexion" in html
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', html).group(1)
    officer = next(u for u in creds["users"] if u["role"] == "officer")

    status, headers, _ = fetch(
        "/login", {"csrf_token": token, "email": officer["email"], "password": officer["password"]}
    )
    assert status == 302 and headers["Location"].endswith("/login/totp")
    status, _, html = fetch("/login/totp")
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', html).group(1)
    code = pyotp.TOTP(officer["totp_secret"]).now()
    status, headers, _ = fetch("/login/totp", {"csrf_token": token, "code": code})
    assert status == 302
    status, _, html = fetch("/")
    assert status == 200 and "Signer les actes" in html and "Mont-de-Marsan" in html

    notary = next(c for c in creds["api_clients"] if c["category"] == "notaire")
    request = urllib.request.Request(
        base + "/api/v1/me", headers={"Authorization": f"Bearer {notary['token']}"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        me = json.loads(response.read())
    assert me["category"] == "notaire" and me["name"] == notary["name"]
    with pytest.raises(urllib.error.HTTPError) as denied:
        urllib.request.urlopen(base + "/api/v1/me", timeout=10)
    denied.value.close()
    assert denied.value.code == 401
    assert denied.value.headers["Content-Type"] == "application/problem+json"
