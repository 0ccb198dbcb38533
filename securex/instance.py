"""The instance folder and the instance secret.

`<instance>/keys/instance.key` (32 random bytes, mode 0600) is created by
`securex init`. Purpose keys are derived from it with HKDF-SHA256, one per use,
so that no key serves two purposes: the Flask session/CSRF signing key, the key
that seals TOTP secrets, the key that pseudonymises client addresses.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from securex.errors import ConfigError

SECRET_NAME = "instance.key"  # noqa: S105 (a file name, not a secret)


def keys_dir(instance: Path) -> Path:
    return instance / "keys"


def create_instance_secret(instance: Path) -> Path:
    """Create the folder layout and a fresh secret; refuse to overwrite one."""
    folder = keys_dir(instance)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(folder, 0o700)
    path = folder / SECRET_NAME
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(secrets.token_bytes(32))
        fh.flush()
        os.fsync(fh.fileno())
    return path


def load_instance_secret(instance: Path) -> bytes:
    path = keys_dir(instance) / SECRET_NAME
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            f"Instance non initialisée : {path} est absent. Lancez « securex init »."
        ) from None
    if len(data) != 32:
        raise ConfigError(f"{path} est endommagé (32 octets attendus).")
    return data


def derive_key(secret: bytes, purpose: str) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"securex/" + purpose.encode()
    ).derive(secret)
