"""Signer backends for pyHanko: a PKCS#12 file and a PKCS#11 token.

pyHanko's `SimpleSigner` re-parses its private key on every signature (about 130 ms of
318 ms per RSA-3072 signature, measured for the Signing issue); `LoadedKeySigner`
parses it once and keeps the `cryptography` key object, so a batch pays for it once.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from pyhanko.sign.signers.pdf_cms import Signer
from pyhanko_certvalidator.registry import SimpleCertificateStore

from securex.signing.errors import SignerUnavailable

_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}


def to_asn1(cert: x509.Certificate) -> asn1_x509.Certificate:
    return asn1_x509.Certificate.load(cert.public_bytes(serialization.Encoding.DER))


class LoadedKeySigner(Signer):
    """A signer whose private key is parsed once, then reused for every signature."""

    def __init__(
        self,
        cert: x509.Certificate,
        key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
        chain: Sequence[x509.Certificate] = (),
    ) -> None:
        self._key = key
        self.certificate = cert
        registry = SimpleCertificateStore.from_certs(  # type: ignore[no-untyped-call]
            [to_asn1(c) for c in chain]
        )
        super().__init__(signing_cert=to_asn1(cert), cert_registry=registry, embed_roots=True)

    async def async_sign_raw(
        self, data: bytes, digest_algorithm: str, dry_run: bool = False
    ) -> bytes:
        return self.sign_raw(data, digest_algorithm)

    def sign_raw(self, data: bytes, digest_algorithm: str) -> bytes:
        algorithm = _HASHES[digest_algorithm.lower()]()
        if isinstance(self._key, rsa.RSAPrivateKey):
            return self._key.sign(data, padding.PKCS1v15(), algorithm)
        return self._key.sign(data, ec.ECDSA(algorithm))


def pkcs12_signer(path: Path, password: bytes | None) -> LoadedKeySigner:
    try:
        data = path.read_bytes()
    except OSError:
        raise SignerUnavailable(f"Fichier de clé de signature illisible : {path}.") from None
    try:
        key, cert, extra = pkcs12.load_key_and_certificates(data, password)
    except ValueError:
        raise SignerUnavailable(
            f"Le fichier PKCS#12 {path.name} ne s'ouvre pas (mot de passe ou fichier)."
        ) from None
    if cert is None or not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise SignerUnavailable(
            f"{path.name} ne contient pas de clé RSA ou ECDSA et son certificat."
        )
    return LoadedKeySigner(cert, key, extra or [])


def pkcs11_signer(
    module: str,
    token_label: str,
    key_label: str,
    pin: str,
    chain: Sequence[x509.Certificate] = (),
) -> Any:
    """A signer on a PKCS#11 token (smart card, HSM; SoftHSM2 in tests). The key never
    leaves the token; the certificate is read from the token under the same label."""
    import pkcs11
    from pyhanko.config.pkcs11 import TokenCriteria
    from pyhanko.sign.pkcs11 import PKCS11Signer, open_pkcs11_session

    criteria = TokenCriteria(label=token_label)
    try:
        try:
            session = open_pkcs11_session(module, token_criteria=criteria, user_pin=pin)
        except pkcs11.UserAlreadyLoggedIn:  # logins are per process (the vault's session)
            session = open_pkcs11_session(module, token_criteria=criteria)
    except Exception as exc:  # pkcs11 raises many kinds; all mean "token unreachable"
        raise SignerUnavailable(
            f"Jeton PKCS#11 « {token_label} » inaccessible ({exc.__class__.__name__}) : "
            "vérifiez le module, le libellé et le code PIN."
        ) from None
    return PKCS11Signer(
        session, key_label=key_label, cert_label=key_label, ca_chain=[to_asn1(c) for c in chain]
    )
