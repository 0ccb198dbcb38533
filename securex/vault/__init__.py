"""The vault: envelope encryption of every document and piece of personal data.

master key (file, passphrase or PKCS#11 token; never in the database)
  -> tenant key versions (wrapped by the master key)
    -> one data key per stored object, the tenant's column and blind-index keys
       (wrapped by a tenant key version)

Formats: docs/vault-format.md. No Flask in here.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from securex.vault.blobs import BlobStore, FilesystemBlobStore
from securex.vault.columns import BlindIndexer, Sealed, column_keys, normalise
from securex.vault.errors import IntegrityError, KeyUnavailable
from securex.vault.keyring import Keyring
from securex.vault.master import MasterKeySource, Pkcs11Token
from securex.vault.store import Vault
from securex.vault.upload import Appended, UploadConflict, UploadState, UploadTooLong

__all__ = [
    "Appended",
    "BlindIndexer",
    "BlobStore",
    "FilesystemBlobStore",
    "IntegrityError",
    "KeyUnavailable",
    "Keyring",
    "MasterKeySource",
    "Sealed",
    "UploadConflict",
    "UploadState",
    "UploadTooLong",
    "Vault",
    "column_keys",
    "master_key_source",
    "normalise",
    "open_vault",
]


def master_key_source(
    settings: Any, environ: Mapping[str, str], prompt: Callable[[], str] | None = None
) -> MasterKeySource:
    """The configured provider. Secrets (passphrase, PIN) come from the environment,
    a PIN file or `prompt`, never from the configuration files."""
    instance: Path = settings.instance
    key_file = settings["master_key_file"] or str(instance / "keys" / "master.key")
    passphrase: Callable[[], str] | None = None
    if environ.get("SECUREX_MASTER_PASSPHRASE"):
        phrase = environ["SECUREX_MASTER_PASSPHRASE"]
        passphrase = lambda: phrase  # noqa: E731
    elif prompt is not None:
        passphrase = functools.cache(prompt)  # asked once per process
    token = None
    if settings["master_key_provider"] == "pkcs11":
        pin = environ.get("SECUREX_PKCS11_PIN", "")
        if not pin and settings["pkcs11.pin_file"]:
            try:
                pin = Path(settings["pkcs11.pin_file"]).read_text().strip()
            except OSError as exc:
                raise KeyUnavailable(f"Fichier de PIN illisible : {exc}.") from None
        if not pin:
            raise KeyUnavailable(
                "Code PIN du jeton absent : définissez SECUREX_PKCS11_PIN ou pkcs11.pin_file."
            )
        token = Pkcs11Token(settings["pkcs11.module"], settings["pkcs11.token_label"], pin)
    return MasterKeySource(
        provider=settings["master_key_provider"],
        key_file=Path(key_file).expanduser(),
        params_file=instance / "keys" / "master.json",
        passphrase=passphrase,
        token=token,
        key_label=settings["pkcs11.master_key_label"],
    )


def open_vault(source: MasterKeySource, instance: Path) -> Vault:
    """The vault of an initialised instance: master keys loaded, blobs in the instance."""
    return Vault(
        Keyring(source.load()),
        FilesystemBlobStore(instance / "blobs"),
        ledger=instance / "keys" / "shred-ledger.jsonl",
    )
