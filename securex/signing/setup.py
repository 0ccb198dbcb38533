"""From configuration to a ready `SigningSetup`: which key signs (PKCS#12 file of the
demo PKI or PKCS#11 token), which TSA timestamps, which trust anchors and revocation
data validate. Production names its TSA and trust anchors in [signing]; a demo instance
uses its embedded PKI, in process, with no server running."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from pyhanko.sign.timestamps.api import TimeStamper
from pyhanko_certvalidator import ValidationContext

from securex.errors import ConfigError
from securex.signing.errors import SignerUnavailable
from securex.signing.pades import Appearance, Level, SigningSetup
from securex.signing.pki import DemoPki
from securex.signing.signers import pkcs11_signer, to_asn1


def _trust_anchors(settings: Any, pki: DemoPki | None) -> list[x509.Certificate]:
    path = settings["signing.trust_anchors"]
    if path:
        try:
            return x509.load_pem_x509_certificates(Path(path).read_bytes())
        except (OSError, ValueError):
            raise ConfigError(f"Ancres de confiance illisibles : {path}.") from None
    if pki is None:
        raise ConfigError(
            "Aucune ancre de confiance : renseignez signing.trust_anchors ou créez la PKI de "
            "démonstration (« securex pki init »)."
        )
    return [pki.root_cert]


def _ocsp_serial(der: bytes) -> int | None:
    from asn1crypto import ocsp

    response = ocsp.OCSPResponse.load(der)
    if response["response_status"].native != "successful":
        return None
    single = response.basic_ocsp_response["tbs_response_data"]["responses"][0]
    serial: int = single["cert_id"]["serial_number"].native
    return serial


def validation_context_factory(
    settings: Any,
    pki: DemoPki | None,
    now: datetime,
    signer: x509.Certificate | None = None,
    material: tuple[list[bytes], list[bytes]] | None = None,
) -> Callable[[], ValidationContext]:
    """Offline from the demo PKI's own CRL and OCSP answers, or fetching as certificates
    say (production, `signing.fetch_revocation = true`). pyHanko embeds whatever the
    context holds, so with a `signer` only its and the TSA's OCSP answers go in: a
    document must not carry the status of every other officer's certificate. A caller
    building many contexts passes `material` (`pki.validation_material(now)`) once."""
    roots = [to_asn1(c) for c in _trust_anchors(settings, pki)]
    fetch = bool(settings["signing.fetch_revocation"])
    if fetch or pki is None:
        return lambda: ValidationContext(
            trust_roots=roots, allow_fetching=True, revocation_mode="hard-fail"
        )
    crls, every_ocsp = material or pki.validation_material(now)
    wanted = {pki.tsa_cert.serial_number} | ({signer.serial_number} if signer else set())
    ocsps = [der for der in every_ocsp if signer is None or _ocsp_serial(der) in wanted]
    others = [to_asn1(pki.ca_cert)]
    return lambda: ValidationContext(
        trust_roots=roots,
        other_certs=others,
        crls=crls,
        ocsps=ocsps,
        allow_fetching=False,
        revocation_mode="hard-fail",
        moment=now,
    )


def timestamper(settings: Any, pki: DemoPki | None) -> TimeStamper:
    url = settings["signing.tsa_url"]
    if url:
        from pyhanko.sign.timestamps.aiohttp_client import HTTPTimeStamper

        stamper: TimeStamper = HTTPTimeStamper(url, timeout=15)
        return stamper
    if pki is None:
        raise ConfigError("Aucun horodateur : renseignez signing.tsa_url.")
    return pki.timestamper()


def signing_setup(
    settings: Any,
    *,
    pki: DemoPki | None,
    email: str,
    level: Level,
    now: datetime,
    environ: Mapping[str, str],
) -> SigningSetup:
    backend = settings["signing.backend"]
    if backend == "pkcs12":
        if pki is None:
            raise SignerUnavailable("La PKI de démonstration est absente : « securex pki init ».")
        from securex.signing.signers import LoadedKeySigner

        cert, key = pki.officer(email)
        signer: Any = LoadedKeySigner(cert, key, pki.chain_for(cert))
    elif backend == "pkcs11":
        pin = environ.get("SECUREX_SIGNING_PIN", "")
        if not pin and settings["signing.pkcs11_pin_file"]:
            pin = Path(settings["signing.pkcs11_pin_file"]).read_text().strip()
        if not pin:
            raise SignerUnavailable(
                "Code PIN absent : définissez SECUREX_SIGNING_PIN ou signing.pkcs11_pin_file."
            )
        chain = [pki.ca_cert, pki.root_cert] if pki else []
        signer = pkcs11_signer(
            settings["signing.pkcs11_module"],
            settings["signing.pkcs11_token_label"],
            email,
            pin,
            chain,
        )
        cert = x509.load_der_x509_certificate(signer.signing_cert.dump())
    else:
        raise ConfigError(f"signing.backend inconnu : {backend!r} (pkcs12 ou pkcs11).")
    return SigningSetup(
        signer=signer,
        certificate=cert,
        level=level,
        timestamper=timestamper(settings, pki) if level.timestamped else None,
        validation_context=validation_context_factory(settings, pki, now, cert),
    )


def appearance_for(
    settings: Any, *, officer: str, commune: str, reason: str | None = None
) -> Appearance:
    try:
        box = tuple(int(v) for v in str(settings["signing.stamp_box"]).split(","))
    except ValueError:
        raise ConfigError("signing.stamp_box : quatre entiers séparés par des virgules.") from None
    if len(box) != 4:
        raise ConfigError("signing.stamp_box : quatre entiers séparés par des virgules.")
    kwargs: dict[str, Any] = {"page": int(settings["signing.stamp_page"]), "box": box}
    if reason:
        kwargs["reason"] = reason
    return Appearance(officer=officer, commune=commune, **kwargs)


def demo_pki_password(instance_secret: bytes) -> bytes:
    """The password of the demo PKI's key files: derived from the instance secret, so it
    is never stored beside them (hex, since PKCS#12 wants text)."""
    from securex.instance import derive_key

    return derive_key(instance_secret, "demo-pki-password").hex().encode()


def load_demo_pki(instance: Path) -> DemoPki | None:
    """The instance's demo PKI, or None when it has none."""
    from securex.instance import load_instance_secret
    from securex.signing.pki import load_pki

    folder = instance / "pki"
    if not folder.exists():
        return None
    return load_pki(folder, demo_pki_password(load_instance_secret(instance)))
