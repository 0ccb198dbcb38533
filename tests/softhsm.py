"""A SoftHSM2 token for the tests: its own configuration and token folder in a temporary
directory, initialised with softhsm2-util (installed by `make system-deps`)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

MODULE = "/usr/lib/softhsm/libsofthsm2.so"
PIN = "4321-test-pin"
SO_PIN = "8765-test-so-pin"


def init_token(label: str) -> Path:
    """Create a fresh token and point SOFTHSM2_CONF at it (read by the module when it is
    first loaded in this process, so one configuration serves the whole run)."""
    if not Path(MODULE).exists() or not shutil.which("softhsm2-util"):
        raise RuntimeError("SoftHSM2 est absent : installez le paquet Debian « softhsm2 ».")
    root = Path(os.environ.get("SOFTHSM2_TEST_ROOT") or tempfile.mkdtemp(prefix="securex-hsm-"))
    os.environ["SOFTHSM2_TEST_ROOT"] = str(root)
    tokens = root / "tokens"
    tokens.mkdir(exist_ok=True)
    conf = root / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n"
    )
    os.environ["SOFTHSM2_CONF"] = str(conf)
    subprocess.run(
        [
            "softhsm2-util",
            "--init-token",
            "--free",
            "--label",
            label,
            "--pin",
            PIN,
            "--so-pin",
            SO_PIN,
        ],
        check=True,
        capture_output=True,
    )
    return root
