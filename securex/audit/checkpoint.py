"""Signed checkpoints of the audit log, in the C2SP signed-note format that Certificate
Transparency's current log software (transparency-dev's Tessera) and its witnesses use.

A checkpoint's text is three lines: the log's origin, the tree size in decimal, the
root hash in standard base64, each ending with a newline. A signed note is that text,
an empty line, then one signature line per key: an em dash, a space, the key name, a
space, and base64(key id (4 bytes) || Ed25519 signature of the text). The key id is
the first four bytes of SHA-256(name || 0x0A || 0x01 || public key). A verifier key is
written `name+keyid-hex+base64(0x01 || public key)`.

The checkpoint's text is also timestamped (RFC 3161, SHA-256 of the text), so the whole
log is anchored in time by a third party. Every way a note can be wrong is `ProofError`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from securex.audit.merkle import ProofError

ED25519 = b"\x01"
DASH = "\u2014"


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes

    def text(self) -> str:
        return f"{self.origin}\n{self.size}\n{base64.b64encode(self.root).decode()}\n"


def _raw(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def key_id(name: str, public_key: Ed25519PublicKey) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + ED25519 + _raw(public_key)).digest()[:4]


def verifier_key(name: str, public_key: Ed25519PublicKey) -> str:
    encoded = base64.b64encode(ED25519 + _raw(public_key)).decode()
    return f"{name}+{key_id(name, public_key).hex()}+{encoded}"


def parse_verifier_key(text: str) -> tuple[str, bytes, Ed25519PublicKey]:
    try:
        name, kid, encoded = text.strip().split("+", 2)  # base64 may hold "+"
        raw = base64.b64decode(encoded, validate=True)
        if raw[:1] != ED25519 or len(raw) != 33:
            raise ValueError("not an Ed25519 verifier key")
        public_key = Ed25519PublicKey.from_public_bytes(raw[1:])
        if bytes.fromhex(kid) != key_id(name, public_key):
            raise ValueError("key id does not match")
    except (ValueError, binascii.Error):
        raise ProofError("clé de vérification illisible") from None
    return name, bytes.fromhex(kid), public_key


def sign_note(checkpoint: Checkpoint, name: str, private_key: Ed25519PrivateKey) -> str:
    text = checkpoint.text()
    signature = private_key.sign(text.encode())
    blob = base64.b64encode(key_id(name, private_key.public_key()) + signature).decode()
    return f"{text}\n{DASH} {name} {blob}\n"


def open_note(note: str, verifier: str) -> Checkpoint:
    """The checkpoint a signed note carries, once its signature by `verifier` checks."""
    name, kid, public_key = parse_verifier_key(verifier)
    text, sep, signatures = note.partition("\n\n")
    if not sep or not text or not signatures.endswith("\n"):
        raise ProofError("note mal formée")
    text += "\n"
    verified = False
    for line in signatures[:-1].split("\n"):
        parts = line.split(" ")
        if len(parts) != 3 or parts[0] != DASH:
            raise ProofError("note mal formée")
        try:
            blob = base64.b64decode(parts[2], validate=True)
        except binascii.Error:
            raise ProofError("note mal formée") from None
        if parts[1] == name and blob[:4] == kid:
            try:
                public_key.verify(blob[4:], text.encode())
            except InvalidSignature:
                raise ProofError("signature de la note invalide") from None
            verified = True
    if not verified:
        raise ProofError("aucune signature de cette clé")
    lines = text[:-1].split("\n")
    if len(lines) < 3 or not lines[1].isdigit() or (lines[1] != "0" and lines[1][0] == "0"):
        raise ProofError("point de contrôle mal formé")
    try:
        root = base64.b64decode(lines[2], validate=True)
    except binascii.Error:
        raise ProofError("point de contrôle mal formé") from None
    if len(root) != 32:
        raise ProofError("point de contrôle mal formé")
    return Checkpoint(lines[0], int(lines[1]), root)
