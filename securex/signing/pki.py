"""The embedded demo PKI: a root, the intermediate "AC État civil", one certificate per
demo officer, a timestamping unit, and the CRLs, OCSP responses and RFC 3161 tokens
that let a demo instance sign and validate with no server running.

Certificates, CRLs and OCSP responses are made with `cryptography`'s builders;
timestamp tokens with pyHanko's in-process `DummyTimeStamper`. Time is a parameter
everywhere: what a CRL or an OCSP response says at `now` is the state at `now`.

Folder layout (the folder is mode 0700; nothing here holds the password)::

    index.json            0600  the ledger: base URL, officers, issued and revoked serials
    root.pem  ca.pem  tsa.pem                 0644  certificates (PEM)
    root.p12  ca.p12  tsa.p12                 0600  key + certificate + chain (PKCS#12)
    officers/<email>.pem  officers/<email>.p12      the same, one pair per officer
    .lock                 0600  serialises writers of index.json

PKCS#12 files use PBES2 (PBKDF2-SHA-256, AES-256-CBC) and an HMAC-SHA-256 MAC under one
password that the caller supplies (derived from the instance secret) and that is never
written here.

`index.json` (format "securex-demo-pki/1")::

    {"format": "securex-demo-pki/1", "base_url": "http://127.0.0.1:8000",
     "officers": [{"email", "name", "commune", "insee", "serial"}],    # issue order
     "issued":  {"<serial hex>": {"issuer": "root" | "ca", "subject": str, "not_after": iso}},
     "revoked": {"<serial hex>": {"at": iso, "reason": "keyCompromise" | ...}}}
"""

from __future__ import annotations

import fcntl
import json
import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from asn1crypto import cms, core, keys, tsp
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID
from pyhanko.sign.general import as_signing_certificate_v2
from pyhanko.sign.timestamps.dummy_client import DummyTimeStamper
from pyhanko_certvalidator.registry import SimpleCertificateStore

from securex.errors import ConfigError, Conflict, NotFound, ValidationFailed

__all__ = [
    "DEFAULT_BASE_URL",
    "DemoPki",
    "OfficerIdentity",
    "OfficerKey",
    "init_pki",
    "load_pki",
]

DEFAULT_BASE_URL = "http://127.0.0.1:8000"
FORMAT = "securex-demo-pki/1"

OfficerKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
_CaKey = rsa.RSAPrivateKey

_ORG = "securex Démo"
_ROOT_CN = "securex Démo — Racine"
_CA_CN = "AC État civil"
_TSA_CN = "securex Démo — Horodatage"
_TITLE = "Officier de l'état civil"

_ROOT_DAYS = 20 * 365
_CA_DAYS = 10 * 365
_TSA_DAYS = 10 * 365
# Certificates start a little before `now`, so that a clock slightly behind the one
# that issued them does not see them as not yet valid.
_BACKDATE = timedelta(minutes=5)
_CRL_VALIDITY = timedelta(days=7)
_OCSP_VALIDITY = timedelta(days=1)

# The password comes from HKDF over the instance secret (high entropy), so PBKDF2 here
# protects copies of a file taken elsewhere rather than a human password.
_P12_KDF_ROUNDS = 100_000

# The policy OID that pyHanko's DummyTimeStamper writes into every TSTInfo.
_TSA_POLICY = "1.3.6.1.4.1.4146.2.2"
# ANSSI: SHA-256 or better. SHA-1 imprints are refused.
_TSA_DIGESTS = {"sha256": 32, "sha384": 48, "sha512": 64}
_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}

_EMAIL = re.compile(r"^[a-z0-9_%+-][a-z0-9._%+-]*@[a-z0-9-]+(\.[a-z0-9-]+)*$")


@dataclass(frozen=True)
class OfficerIdentity:
    """Who an officer certificate names. `commune` is the commune's name ("Mont-de-Marsan");
    the certificate's organisation is "Mairie de <commune>"."""

    email: str
    name: str
    commune: str
    insee: str


@dataclass
class _Loaded:
    cert: x509.Certificate
    key: OfficerKey


def _aware(now: datetime) -> datetime:
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return now.astimezone(UTC)


def _serial_hex(serial: int) -> str:
    return format(serial, "x")


def _email_key(email: str) -> str:
    key = email.strip().lower()
    if not _EMAIL.match(key):
        raise ValidationFailed(f"Adresse électronique d'officier invalide : {email!r}")
    return key


def _write(path: Path, data: bytes, mode: int) -> None:
    """Write atomically with exactly `mode` (umask aside): a reader sees the old file or
    the new one, never half of one."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _dump_ledger(index: dict[str, Any]) -> bytes:
    return json.dumps(index, ensure_ascii=False, indent=2).encode() + b"\n"


def _issued(issuer: str, subject: str, cert: x509.Certificate) -> dict[str, str]:
    return {
        "issuer": issuer,
        "subject": subject,
        "not_after": cert.not_valid_after_utc.isoformat(),
    }


def _mkdir(path: Path) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.chmod(0o700)


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _to_asn1(cert: x509.Certificate) -> asn1_x509.Certificate:
    return asn1_x509.Certificate.load(cert.public_bytes(serialization.Encoding.DER))


def _p12_encryption(password: bytes) -> serialization.KeySerializationEncryption:
    return (
        serialization.PrivateFormat.PKCS12.encryption_builder()
        .kdf_rounds(_P12_KDF_ROUNDS)
        .key_cert_algorithm(pkcs12.PBES.PBESv2SHA256AndAES256CBC)
        .hmac_hash(hashes.SHA256())
        .build(password)
    )


def _key_bits(cert: x509.Certificate) -> bytes:
    """The subjectPublicKey BIT STRING's value: what an OCSP CertID's issuerKeyHash hashes."""
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return bytes(keys.PublicKeyInfo.load(spki)["public_key"])


def _digest(algorithm: hashes.HashAlgorithm, data: bytes) -> bytes:
    h = hashes.Hash(algorithm)
    h.update(data)
    return h.finalize()


def _leaf_builder(
    base_url: str,
    ca: x509.Certificate,
    subject: x509.Name,
    public_key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey,
    now: datetime,
    days: int,
) -> x509.CertificateBuilder:
    """An end-entity certificate under the intermediate `ca`, with the extensions every
    one of them carries; the caller adds key usages and names."""
    ca_ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(min(now + timedelta(days=days), ca.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
            critical=False,
        )
        .add_extension(_crl_dp(f"{base_url}/pki/ca.crl"), critical=False)
        .add_extension(
            x509.AuthorityInformationAccess(
                [
                    x509.AccessDescription(
                        AuthorityInformationAccessOID.OCSP,
                        x509.UniformResourceIdentifier(f"{base_url}/pki/ocsp"),
                    ),
                    x509.AccessDescription(
                        AuthorityInformationAccessOID.CA_ISSUERS,
                        x509.UniformResourceIdentifier(f"{base_url}/pki/ca.crt"),
                    ),
                ]
            ),
            critical=False,
        )
    )


def _crl_dp(url: str) -> x509.CRLDistributionPoints:
    return x509.CRLDistributionPoints(
        [
            x509.DistributionPoint(
                full_name=[x509.UniformResourceIdentifier(url)],
                relative_name=None,
                reasons=None,
                crl_issuer=None,
            )
        ]
    )


def _key_usage(
    *, signing: bool = False, non_repudiation: bool = False, ca: bool = False
) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=signing,
        content_commitment=non_repudiation,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


class _DemoTimeStamper(DummyTimeStamper):
    """pyHanko's DummyTimeStamper, signing with a key parsed once.

    The parent re-parses its PKCS#8 key for every token, about 110 ms for RSA-3072 (most
    of it OpenSSL's key check): two tokens per B-LTA signature would cost more than the
    signature itself. Only the signing step is replaced; it also names the TSA
    certificate by SHA-256 (ESS signingCertificateV2) instead of SHA-1.
    """

    def __init__(
        self,
        tsa_cert: x509.Certificate,
        tsa_key: rsa.RSAPrivateKey,
        chain: Sequence[x509.Certificate],
        fixed_dt: datetime | None,
    ) -> None:
        key_info = keys.PrivateKeyInfo.load(
            tsa_key.private_bytes(
                serialization.Encoding.DER,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        super().__init__(
            tsa_cert=_to_asn1(tsa_cert),
            tsa_key=key_info,
            certs_to_embed=SimpleCertificateStore.from_certs(  # type: ignore[no-untyped-call]
                [_to_asn1(c) for c in chain]
            ),
            fixed_dt=fixed_dt,
        )
        self._key = tsa_key

    def _sign_tst_info(
        self, tst_info_data: bytes, md_algorithm: str, dt: datetime
    ) -> tuple[bytes, Any]:
        algorithm = _HASHES[md_algorithm.lower()]()
        signed_attrs = cms.CMSAttributes(
            [
                _attr("content_type", "tst_info"),
                _attr("signing_time", cms.Time({"utc_time": core.UTCTime(dt)})),
                _attr("signing_certificate_v2", as_signing_certificate_v2(self.tsa_cert)),
                _attr("message_digest", _digest(algorithm, tst_info_data)),
            ]
        )
        signature = self._key.sign(signed_attrs.dump(), padding.PKCS1v15(), algorithm)
        return signature, signed_attrs


def _attr(kind: str, value: Any) -> Any:
    return cms.CMSAttribute({"type": kind, "values": (value,)})


class _TimeStampResp(tsp.TimeStampResp):  # type: ignore[misc]
    """RFC 3161's TimeStampResp, whose timeStampToken is OPTIONAL (absent when the
    status is a rejection); asn1crypto 1.5 declares it mandatory, so it cannot encode
    a rejection."""

    _fields = [  # noqa: RUF012 -- asn1crypto's declaration style
        ("status", tsp.PKIStatusInfo),
        ("time_stamp_token", cms.ContentInfo, {"optional": True}),
    ]


def _tsa_rejection(fail: str, text: str) -> bytes:
    status = tsp.PKIStatusInfo(
        {
            "status": "rejection",
            "status_string": [text],
            "fail_info": tsp.PKIFailureInfo({fail}),
        }
    )
    return bytes(_TimeStampResp({"status": status}).dump())


def _without_certificates(resp: tsp.TimeStampResp) -> tsp.TimeStampResp:
    """RFC 3161 §2.4.1: without certReq the token carries no certificates field."""
    signed = resp["time_stamp_token"]["content"]
    kept = {
        name: signed[name]
        for name in ("version", "digest_algorithms", "encap_content_info", "signer_infos")
    }
    token = cms.ContentInfo({"content_type": "signed_data", "content": cms.SignedData(kept)})
    return tsp.TimeStampResp({"status": resp["status"], "time_stamp_token": token})


class DemoPki:
    """A demo PKI stored in `folder`. Certificates are parsed when it is opened; each
    private key is decrypted on first use and kept in memory. The ledger (officers,
    revocations) is re-read whenever another process has changed it, so a running web
    app answers OCSP for a certificate revoked from the command line."""

    folder: Path
    base_url: str
    root_cert: x509.Certificate
    ca_cert: x509.Certificate
    tsa_cert: x509.Certificate

    def __init__(self, folder: Path, password: bytes) -> None:
        if not password:
            raise ValidationFailed("Le mot de passe de la PKI de démonstration est vide.")
        self.folder = folder
        self._password = password
        self._keys: dict[str, _Loaded] = {}
        self._officer_certs: dict[str, x509.Certificate] = {}
        self._index_stamp: tuple[int, int, int] | None = None
        self._index: dict[str, Any] = {}
        self._stamper: _DemoTimeStamper | None = None
        index = self._ledger()
        if index.get("format") != FORMAT:
            raise ConfigError(f"{folder / 'index.json'} : format de PKI inconnu.")
        self.base_url = str(index["base_url"])
        self.root_cert = self._read_cert(folder / "root.pem")
        self.ca_cert = self._read_cert(folder / "ca.pem")
        self.tsa_cert = self._read_cert(folder / "tsa.pem")
        # Opening the CA's PKCS#12 proves the password now rather than at the first
        # signature; the CA key is needed for any CRL or OCSP response anyway.
        self._load_key("ca")

    # --- reading ---------------------------------------------------------------------

    @staticmethod
    def _read_cert(path: Path) -> x509.Certificate:
        try:
            return x509.load_pem_x509_certificate(path.read_bytes())
        except (OSError, ValueError) as e:
            raise ConfigError(f"Certificat illisible : {path} ({e})") from e

    def _ledger(self) -> dict[str, Any]:
        path = self.folder / "index.json"
        try:
            st = path.stat()
            stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
            if stamp != self._index_stamp:
                self._index = json.loads(path.read_text(encoding="utf-8"))
                self._index_stamp = stamp
        except (OSError, ValueError) as e:
            raise ConfigError(f"Registre de la PKI illisible : {path} ({e})") from e
        return self._index

    def _p12_path(self, name: str) -> Path:
        if name in ("root", "ca", "tsa"):
            return self.folder / f"{name}.p12"
        return self.folder / "officers" / f"{name}.p12"

    def _load_key(self, name: str) -> _Loaded:
        """`name` is "root", "ca", "tsa" or an officer's email key."""
        path = self._p12_path(name)
        cached = self._keys.get(name)
        if name not in ("root", "ca", "tsa"):
            # An officer's certificate may have been replaced by another process.
            serial = self._officer_entry(name)["serial"]
            if cached is not None and _serial_hex(cached.cert.serial_number) != serial:
                cached = None
        if cached is not None:
            return cached
        try:
            key, cert, _ = pkcs12.load_key_and_certificates(path.read_bytes(), self._password)
        except OSError as e:
            raise ConfigError(f"Fichier de clé illisible : {path} ({e})") from e
        except ValueError as e:
            raise ConfigError(
                f"Impossible d'ouvrir {path} : mot de passe de la PKI incorrect ou fichier "
                "endommagé (le secret de l'instance a-t-il changé ?)."
            ) from e
        if cert is None or not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
            raise ConfigError(f"{path} ne contient pas une clé RSA ou ECDSA et son certificat.")
        loaded = _Loaded(cert, key)
        self._keys[name] = loaded
        return loaded

    def _ca_key(self, name: str) -> _CaKey:
        key = self._load_key(name).key
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ConfigError(f"La clé de {name} n'est pas une clé RSA.")
        return key

    def _officer_entry(self, email_key: str) -> dict[str, str]:
        for entry in self._ledger()["officers"]:
            if entry["email"] == email_key:
                return dict(entry)
        raise NotFound(
            f"Aucun certificat d'officier pour {email_key} dans la PKI de démonstration "
            f"({self.folder})."
        )

    # --- public reading API ----------------------------------------------------------

    def roots_pem(self) -> bytes:
        """The trust anchors (the root certificate), PEM."""
        return _pem(self.root_cert)

    def chain_for(self, cert: x509.Certificate) -> list[x509.Certificate]:
        """The certificates above `cert`, nearest first, up to the root."""
        if cert.issuer == self.ca_cert.subject and cert != self.ca_cert:
            return [self.ca_cert, self.root_cert]
        if cert == self.ca_cert:
            return [self.root_cert]
        return []

    def officers(self) -> list[OfficerIdentity]:
        """The officers who hold a certificate, in the order they were first issued."""
        return [
            OfficerIdentity(e["email"], e["name"], e["commune"], e["insee"])
            for e in self._ledger()["officers"]
        ]

    def officer_cert(self, email: str) -> x509.Certificate:
        """An officer's current certificate (no password needed)."""
        key = _email_key(email)
        serial = self._officer_entry(key)["serial"]
        cached = self._officer_certs.get(key)
        if cached is None or _serial_hex(cached.serial_number) != serial:
            cached = self._read_cert(self.folder / "officers" / f"{key}.pem")
            self._officer_certs[key] = cached
        return cached

    def officer(self, email: str) -> tuple[x509.Certificate, OfficerKey]:
        """An officer's certificate and private key, from its PKCS#12 (parsed once)."""
        loaded = self._load_key(_email_key(email))
        return loaded.cert, loaded.key

    def officer_p12_path(self, email: str) -> Path:
        key = _email_key(email)
        self._officer_entry(key)
        return self._p12_path(key)

    def p12_password(self) -> bytes:
        return self._password

    def is_revoked(self, serial: int, now: datetime) -> bool:
        """Whether `serial` is revoked at `now` (by this PKI's ledger)."""
        return self._revocation(serial, _aware(now)) is not None

    def _revocation(self, serial: int, now: datetime) -> tuple[datetime, x509.ReasonFlags] | None:
        entry = self._ledger()["revoked"].get(_serial_hex(serial))
        if entry is None:
            return None
        at = datetime.fromisoformat(entry["at"])
        if at > now:
            return None
        return at, x509.ReasonFlags(entry["reason"])

    # --- issuing and revoking --------------------------------------------------------

    @contextmanager
    def _locked_ledger(self) -> Iterator[dict[str, Any]]:
        """Read-modify-write of index.json under an exclusive lock."""
        fd = os.open(self.folder / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._index_stamp = None  # re-read under the lock
            index = json.loads(json.dumps(self._ledger()))
            yield index
            _write(self.folder / "index.json", _dump_ledger(index), 0o600)
            self._index_stamp = None
        finally:
            os.close(fd)

    def issue_officer(
        self,
        who: OfficerIdentity,
        *,
        key_type: str = "rsa3072",
        now: datetime,
        days: int = 3 * 365,
    ) -> x509.Certificate:
        """Issue (or replace) an officer's certificate. A replaced certificate is revoked
        with reason "superseded" at `now`."""
        now = _aware(now)
        email = _email_key(who.email)
        if not who.name.strip() or not who.commune.strip():
            raise ValidationFailed("Le nom de l'officier et la commune sont obligatoires.")
        key: OfficerKey
        if key_type == "rsa3072":
            key = rsa.generate_private_key(public_exponent=65537, key_size=3072)
        elif key_type == "ecdsa-p256":
            key = ec.generate_private_key(ec.SECP256R1())
        else:
            raise ValidationFailed(
                f"Type de clé inconnu : {key_type!r} (attendu : rsa3072 ou ecdsa-p256)."
            )
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.COUNTRY_NAME, "FR"),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, f"Mairie de {who.commune}"),
                x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "État civil"),
                x509.NameAttribute(NameOID.LOCALITY_NAME, who.commune),
                x509.NameAttribute(NameOID.TITLE, _TITLE),
                x509.NameAttribute(NameOID.COMMON_NAME, who.name),
            ]
        )
        # No extended key usage: NSS (pdfsig) checks signer certificates for the
        # e-mail-signer usage, which an EKU without emailProtection would fail.
        cert = (
            _leaf_builder(self.base_url, self.ca_cert, subject, key.public_key(), now, days)
            .add_extension(_key_usage(signing=True, non_repudiation=True), critical=True)
            .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(email)]), critical=False)
            .sign(self._ca_key("ca"), hashes.SHA256())
        )
        officers_dir = self.folder / "officers"
        _mkdir(officers_dir)
        with self._locked_ledger() as index:
            p12 = pkcs12.serialize_key_and_certificates(
                who.name.encode(),
                key,
                cert,
                [self.ca_cert, self.root_cert],
                _p12_encryption(self._password),
            )
            _write(officers_dir / f"{email}.p12", p12, 0o600)
            _write(officers_dir / f"{email}.pem", _pem(cert), 0o644)
            serial = _serial_hex(cert.serial_number)
            entry = {
                "email": email,
                "name": who.name,
                "commune": who.commune,
                "insee": who.insee,
                "serial": serial,
            }
            for i, old in enumerate(index["officers"]):
                if old["email"] == email:
                    index["officers"][i] = entry
                    index["revoked"].setdefault(
                        old["serial"],
                        {"at": now.isoformat(), "reason": x509.ReasonFlags.superseded.value},
                    )
                    break
            else:
                index["officers"].append(entry)
            index["issued"][serial] = _issued("ca", email, cert)
        self._keys[email] = _Loaded(cert, key)
        self._officer_certs[email] = cert
        return cert

    def revoke(
        self,
        serial: int,
        *,
        now: datetime,
        reason: x509.ReasonFlags = x509.ReasonFlags.key_compromise,
    ) -> None:
        """Revoke a certificate issued by the intermediate (or the intermediate itself,
        which the root's CRL then lists)."""
        now = _aware(now)
        if reason is x509.ReasonFlags.remove_from_crl:
            raise ValidationFailed("Le motif removeFromCRL ne sert qu'aux CRL delta.")
        with self._locked_ledger() as index:
            key = _serial_hex(serial)
            if key not in index["issued"]:
                raise NotFound(f"Aucun certificat de numéro de série {key} dans cette PKI.")
            if key in index["revoked"]:
                raise Conflict(f"Le certificat {key} est déjà révoqué.")
            index["revoked"][key] = {"at": now.isoformat(), "reason": reason.value}

    # --- CRLs --------------------------------------------------------------------------

    def _crl(self, issuer: str, now: datetime) -> bytes:
        now = _aware(now)
        issuer_cert = self.root_cert if issuer == "root" else self.ca_cert
        ski = issuer_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(issuer_cert.subject)
            .last_update(now)
            .next_update(now + _CRL_VALIDITY)
            # Monotonic without state: a later `now` gives a larger number.
            .add_extension(x509.CRLNumber(int(now.timestamp())), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski.value),
                critical=False,
            )
        )
        index = self._ledger()
        for serial, info in sorted(index["revoked"].items()):
            if index["issued"].get(serial, {}).get("issuer") != issuer:
                continue
            at = datetime.fromisoformat(info["at"])
            if at > now:
                continue
            entry = (
                x509.RevokedCertificateBuilder().serial_number(int(serial, 16)).revocation_date(at)
            )
            reason = x509.ReasonFlags(info["reason"])
            if reason is not x509.ReasonFlags.unspecified:  # RFC 5280 §5.3.1
                entry = entry.add_extension(x509.CRLReason(reason), critical=False)
            builder = builder.add_revoked_certificate(entry.build())
        return builder.sign(self._ca_key(issuer), hashes.SHA256()).public_bytes(
            serialization.Encoding.DER
        )

    def crl_der(self, now: datetime) -> bytes:
        """The intermediate's CRL at `now` (served at {base_url}/pki/ca.crl)."""
        return self._crl("ca", now)

    def root_crl_der(self, now: datetime) -> bytes:
        """The root's CRL at `now` (served at {base_url}/pki/root.crl): it covers the
        intermediate, whose certificate names that URL."""
        return self._crl("root", now)

    # --- OCSP --------------------------------------------------------------------------

    def _ocsp_single(
        self,
        serial: int,
        name_hash: bytes,
        key_hash: bytes,
        algorithm: hashes.HashAlgorithm,
        now: datetime,
        nonce: bytes | None,
    ) -> bytes:
        key = _serial_hex(serial)
        issued = self._ledger()["issued"].get(key)
        revocation = self._revocation(serial, now)
        status = ocsp.OCSPCertStatus.GOOD
        revoked_at: datetime | None = None
        reason: x509.ReasonFlags | None = None
        if issued is None or issued["issuer"] != "ca":
            status = ocsp.OCSPCertStatus.UNKNOWN
        elif revocation is not None:
            status = ocsp.OCSPCertStatus.REVOKED
            revoked_at, reason = revocation
            if reason is x509.ReasonFlags.unspecified:
                reason = None
        builder = (
            ocsp.OCSPResponseBuilder()
            .add_response_by_hash(
                issuer_name_hash=name_hash,
                issuer_key_hash=key_hash,
                serial_number=serial,
                algorithm=algorithm,
                cert_status=status,
                this_update=now,
                next_update=now + _OCSP_VALIDITY,
                revocation_time=revoked_at,
                revocation_reason=reason,
            )
            .responder_id(ocsp.OCSPResponderEncoding.HASH, self.ca_cert)
            .certificates([self.ca_cert])
        )
        if nonce is not None:
            builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
        return builder.sign(self._ca_key("ca"), hashes.SHA256()).public_bytes(
            serialization.Encoding.DER
        )

    def ocsp_response_der(self, request_der: bytes, now: datetime) -> bytes:
        """Answer an OCSP request (RFC 6960) for a certificate issued by the intermediate,
        signed by the intermediate itself. Never raises on bad input: a request that does
        not parse gets malformedRequest, one about another issuer gets unauthorized."""
        now = _aware(now)
        try:
            req = ocsp.load_der_ocsp_request(request_der)
            algorithm = req.hash_algorithm
            name_hash, key_hash, serial = (
                req.issuer_name_hash,
                req.issuer_key_hash,
                req.serial_number,
            )
            nonce: bytes | None = None
            for ext in req.extensions:
                if isinstance(ext.value, x509.OCSPNonce):
                    nonce = ext.value.nonce
        # NotImplementedError: several certificates in one request, which the builder
        # cannot answer; clients (pyHanko, NSS, openssl) ask one at a time.
        except (ValueError, TypeError, UnsupportedAlgorithm, NotImplementedError):
            return ocsp.OCSPResponseBuilder.build_unsuccessful(
                ocsp.OCSPResponseStatus.MALFORMED_REQUEST
            ).public_bytes(serialization.Encoding.DER)
        if name_hash != _digest(
            algorithm, self.ca_cert.subject.public_bytes()
        ) or key_hash != _digest(algorithm, _key_bits(self.ca_cert)):
            return ocsp.OCSPResponseBuilder.build_unsuccessful(
                ocsp.OCSPResponseStatus.UNAUTHORIZED
            ).public_bytes(serialization.Encoding.DER)
        return self._ocsp_single(serial, name_hash, key_hash, algorithm, now, nonce)

    def _ocsp_for(self, cert: x509.Certificate, now: datetime) -> bytes:
        algorithm = hashes.SHA256()
        return self._ocsp_single(
            cert.serial_number,
            _digest(algorithm, self.ca_cert.subject.public_bytes()),
            _digest(algorithm, _key_bits(self.ca_cert)),
            algorithm,
            now,
            None,
        )

    # --- timestamps ----------------------------------------------------------------------

    def timestamper(self, *, fixed_dt: datetime | None = None) -> DummyTimeStamper:
        """An in-process RFC 3161 TSA (pyHanko's TimeStamper interface). Without
        `fixed_dt` the tokens carry the current time and the same object is returned
        each time (pyHanko caches its size-estimation token on it)."""
        tsa = self._load_key("tsa")
        if not isinstance(tsa.key, rsa.RSAPrivateKey):
            raise ConfigError("La clé de l'unité d'horodatage n'est pas une clé RSA.")
        if fixed_dt is not None:
            return _DemoTimeStamper(tsa.cert, tsa.key, [self.ca_cert], _aware(fixed_dt))
        if self._stamper is None:
            self._stamper = _DemoTimeStamper(tsa.cert, tsa.key, [self.ca_cert], None)
        return self._stamper

    def tsa_response_der(self, request_der: bytes, now: datetime | None = None) -> bytes:
        """Answer a DER TimeStampReq with a DER TimeStampResp (for the HTTP endpoint).
        Never raises on bad input: it answers a rejection with a PKIFailureInfo."""
        when = _aware(now) if now is not None else datetime.now(UTC)
        try:
            req = tsp.TimeStampReq.load(request_der, strict=True)
            req.native  # noqa: B018 -- asn1crypto parses lazily: parse it all here
            version = req["version"].native
            algorithm = req["message_imprint"]["hash_algorithm"]["algorithm"].native
            digest = req["message_imprint"]["hashed_message"].native
            policy = req["req_policy"].native
            extensions = req["extensions"].native
            cert_req = bool(req["cert_req"].native)
        # Untrusted bytes: whatever asn1crypto raises on them is a malformed request.
        except Exception:
            return _tsa_rejection("bad_data_format", "Requête d'horodatage illisible.")
        if version != "v1":
            return _tsa_rejection("bad_request", "Version de requête non prise en charge.")
        if _TSA_DIGESTS.get(algorithm) != len(digest):
            return _tsa_rejection(
                "bad_alg", "Empreinte attendue : SHA-256, SHA-384 ou SHA-512, de bonne taille."
            )
        if policy not in (None, _TSA_POLICY):
            return _tsa_rejection("unaccepted_policy", "Politique d'horodatage non acceptée.")
        if extensions:
            return _tsa_rejection("unaccepted_extensions", "Extensions non acceptées.")
        resp = self.timestamper(fixed_dt=when).request_tsa_response(req)
        if not cert_req:
            resp = _without_certificates(resp)
        return bytes(resp.dump())

    # --- validation material -------------------------------------------------------------

    def validation_material(self, now: datetime) -> tuple[list[bytes], list[bytes]]:
        """(CRLs, OCSP responses) at `now`, DER: the intermediate's and the root's CRLs,
        and an OCSP response for every officer's current certificate and for the TSA
        certificate. With the root as trust anchor this is all pyHanko needs to validate
        (and embed for B-LT) with allow_fetching=False, even when revocation information
        is required for every certificate of the path."""
        now = _aware(now)
        crls = [self.crl_der(now), self.root_crl_der(now)]
        certs = [self.officer_cert(o.email) for o in self.officers()] + [self.tsa_cert]
        return crls, [self._ocsp_for(c, now) for c in certs]


# --- creating and opening -----------------------------------------------------------------


def _holds_pki(folder: Path) -> bool:
    return any((folder / name).exists() for name in ("index.json", "root.pem", "root.p12"))


def _ca_name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "FR"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, _ORG),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def init_pki(
    folder: Path,
    *,
    base_url: str = DEFAULT_BASE_URL,
    now: datetime,
    password: bytes,
    officers: Sequence[OfficerIdentity] = (),
) -> DemoPki:
    """Create a demo PKI in `folder` (created if needed; refused if it already holds
    one): root, intermediate, TSA, then one RSA-3072 certificate per officer."""
    now = _aware(now)
    if not password:
        raise ValidationFailed("Le mot de passe de la PKI de démonstration est vide.")
    base_url = base_url.rstrip("/")
    if not re.fullmatch(r"https?://[^/\s]+(/\S*)?", base_url):
        raise ValidationFailed(f"URL de base invalide : {base_url!r}")
    if _holds_pki(folder):
        raise Conflict(
            f"Une PKI de démonstration existe déjà dans {folder} : supprimez ce dossier "
            "pour en créer une nouvelle."
        )
    _mkdir(folder)
    enc = _p12_encryption(password)

    root_key = rsa.generate_private_key(public_exponent=65537, key_size=4096)
    root_ski = x509.SubjectKeyIdentifier.from_public_key(root_key.public_key())
    root_aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(root_ski)
    root = (
        x509.CertificateBuilder()
        .subject_name(_ca_name(_ROOT_CN))
        .issuer_name(_ca_name(_ROOT_CN))
        .public_key(root_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + timedelta(days=_ROOT_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
        .add_extension(root_ski, critical=False)
        .add_extension(root_aki, critical=False)
        .sign(root_key, hashes.SHA256())
    )

    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    ca = (
        x509.CertificateBuilder()
        .subject_name(_ca_name(_CA_CN))
        .issuer_name(root.subject)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + timedelta(days=_CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        # digitalSignature as well: this CA signs its own OCSP responses.
        .add_extension(_key_usage(ca=True, signing=True), critical=True)
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .add_extension(root_aki, critical=False)
        .add_extension(_crl_dp(f"{base_url}/pki/root.crl"), critical=False)
        .add_extension(
            x509.AuthorityInformationAccess(
                [
                    x509.AccessDescription(
                        AuthorityInformationAccessOID.CA_ISSUERS,
                        x509.UniformResourceIdentifier(f"{base_url}/pki/root.crt"),
                    )
                ]
            ),
            critical=False,
        )
        .sign(root_key, hashes.SHA256())
    )

    tsa_key = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    tsa = (
        _leaf_builder(base_url, ca, _ca_name(_TSA_CN), tsa_key.public_key(), now, _TSA_DAYS)
        .add_extension(_key_usage(signing=True, non_repudiation=True), critical=True)
        # RFC 3161 §2.3: exactly one EKU, timeStamping, critical.
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]), critical=True)
        .sign(ca_key, hashes.SHA256())
    )

    p12 = pkcs12.serialize_key_and_certificates
    _write(folder / "root.p12", p12(b"root", root_key, root, None, enc), 0o600)
    _write(folder / "ca.p12", p12(b"ca", ca_key, ca, [root], enc), 0o600)
    _write(folder / "tsa.p12", p12(b"tsa", tsa_key, tsa, [ca, root], enc), 0o600)
    for name, cert in (("root", root), ("ca", ca), ("tsa", tsa)):
        _write(folder / f"{name}.pem", _pem(cert), 0o644)
    index: dict[str, Any] = {
        "format": FORMAT,
        "base_url": base_url,
        "officers": [],
        "issued": {
            _serial_hex(ca.serial_number): _issued("root", _CA_CN, ca),
            _serial_hex(tsa.serial_number): _issued("ca", _TSA_CN, tsa),
        },
        "revoked": {},
    }
    # Written last: index.json is what marks the folder as holding a PKI.
    _write(folder / "index.json", _dump_ledger(index), 0o600)
    pki = DemoPki(folder, password)  # the one way to open a PKI, also used here
    pki._keys["root"] = _Loaded(root, root_key)
    pki._keys["tsa"] = _Loaded(tsa, tsa_key)
    for who in officers:
        pki.issue_officer(who, now=now)
    return pki


def load_pki(folder: Path, password: bytes) -> DemoPki:
    """Open the demo PKI in `folder`."""
    if not (folder / "index.json").is_file():
        raise NotFound(
            f"Aucune PKI de démonstration dans {folder} : créez-la avec `securex pki init` "
            "(ou `securex init --demo`)."
        )
    return DemoPki(folder, password)
