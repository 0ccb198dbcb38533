"""Signing throughput: `securex sign --batch` against pyHanko used as its documentation
shows, measured in the same run.

    .venv/bin/python bench/signing.py [--count 100] [--repeat 3]

For RSA-3072 and ECDSA P-256 officers, at B-B and at B-LTA, it signs --count one-page
acts:
- reference: in one process, for each file, `SimpleSigner.load_pkcs12(...)` then
  `signers.sign_pdf(...)` (B-LTA adds the timestamper and validation context pyHanko's
  documentation shows, with the same in-process demo TSA and revocation data);
- securex: one `securex sign --batch DIR -o OUT --level L` command (a new process: start,
  imports, key loading, the signer's revocation check and the worker pool included).
Prints per-signature medians over --repeat rounds and the ratios the Signing issue sets:
securex B-B at least 5x faster than the reference (10x is the aim), securex B-LTA at
most 3x securex B-B.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SECUREX = str(Path(sys.executable).with_name("securex"))
OFFICERS = {
    "rsa3072": "officier.mont-de-marsan@demo.securex.fr",
    "ecdsa-p256": "officier.dax@demo.securex.fr",
}


def reference(
    files: list[Path], out: Path, p12: Path, password: bytes, level: str, pki: object
) -> float:
    from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
    from pyhanko.sign import signers
    from pyhanko_certvalidator import ValidationContext

    from securex.signing.signers import to_asn1

    vc_kwargs = {}
    timestamper = None
    if level == "B-LTA":
        crls, ocsps = pki.validation_material(datetime.now(UTC))  # type: ignore[attr-defined]
        vc_kwargs = {
            "trust_roots": [to_asn1(pki.root_cert)],  # type: ignore[attr-defined]
            "crls": crls,
            "ocsps": ocsps,
            "allow_fetching": False,
        }
        timestamper = pki.timestamper()  # type: ignore[attr-defined]
    start = time.perf_counter()
    for path in files:
        signer = signers.SimpleSigner.load_pkcs12(pfx_file=str(p12), passphrase=password)
        meta = signers.PdfSignatureMetadata(field_name="Signature1")
        if level == "B-LTA":
            meta = signers.PdfSignatureMetadata(
                field_name="Signature1",
                embed_validation_info=True,
                use_pades_lta=True,
                subfilter=signers.SigSeedSubFilter.PADES
                if hasattr(signers, "SigSeedSubFilter")
                else None,
                validation_context=ValidationContext(**vc_kwargs),
            )
        with path.open("rb") as inf:
            writer = IncrementalPdfFileWriter(inf)
            with (out / path.name).open("wb") as outf:
                signers.sign_pdf(writer, meta, signer=signer, timestamper=timestamper, output=outf)
    return (time.perf_counter() - start) / len(files)


def securex_batch(
    files_dir: Path, out: Path, level: str, email: str, env: dict[str, str], count: int
) -> float:
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    subprocess.run(
        [
            SECUREX,
            "sign",
            "--batch",
            str(files_dir),
            "-o",
            str(out),
            "--level",
            level,
            "--signer",
            email,
        ],
        env=env,
        check=True,
        capture_output=True,
    )
    elapsed = time.perf_counter() - start
    if len(list(out.iterdir())) != count:
        raise SystemExit("securex did not sign every file")
    return elapsed / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    from securex.signing.setup import load_demo_pki
    from tests.pdfs import one_page_pdf

    work = Path(tempfile.mkdtemp(prefix="securex-bench-sign-"))
    try:
        env = {**os.environ, "SECUREX_INSTANCE": str(work / "instance"), "SECUREX_DATABASE_URL": ""}
        subprocess.run([SECUREX, "init", "--demo"], env=env, check=True, capture_output=True)
        subprocess.run(
            [SECUREX, "pki", "issue", OFFICERS["ecdsa-p256"], "--key-type", "ecdsa-p256"],
            env=env,
            check=True,
            capture_output=True,
        )
        os.environ["SECUREX_INSTANCE"] = env["SECUREX_INSTANCE"]
        pki = load_demo_pki(work / "instance")
        assert pki is not None
        files_dir = work / "acts"
        files_dir.mkdir()
        for i in range(args.count):
            (files_dir / f"acte-{i:03}.pdf").write_bytes(one_page_pdf(f"Acte de naissance {i}"))
        files = sorted(files_dir.iterdir())
        results: dict[tuple[str, str, str], list[float]] = {}
        for _ in range(args.repeat):
            for key_type, email in OFFICERS.items():
                for level in ("B-B", "B-LTA"):
                    ref_out = work / "ref"
                    shutil.rmtree(ref_out, ignore_errors=True)
                    ref_out.mkdir()
                    results.setdefault((key_type, level, "reference"), []).append(
                        reference(
                            files,
                            ref_out,
                            pki.officer_p12_path(email),
                            pki.p12_password(),
                            level,
                            pki,
                        )
                    )
                    results.setdefault((key_type, level, "securex"), []).append(
                        securex_batch(files_dir, work / "out", level, email, env, args.count)
                    )
        med = {k: statistics.median(v) for k, v in results.items()}
        print(
            f"securex signing benchmark: {args.count} one-page acts, median of "
            f"{args.repeat}, {os.cpu_count()} cores (per-signature times)"
        )
        for key_type in OFFICERS:
            for level in ("B-B", "B-LTA"):
                ref = med[(key_type, level, "reference")]
                ours = med[(key_type, level, "securex")]
                print(
                    f"  {key_type:<10} {level:<6} pyHanko as documented {ref * 1000:7.1f} ms"
                    f"   securex sign --batch {ours * 1000:7.1f} ms   speed-up {ref / ours:5.1f}x"
                )
            bb = med[(key_type, "B-B", "securex")]
            lta = med[(key_type, "B-LTA", "securex")]
            speedup = med[(key_type, "B-B", "reference")] / bb
            print(
                f"  {key_type:<10} B-B speed-up {speedup:.1f}x (target >= 5x, aim 10x: "
                f"{'met' if speedup >= 5 else 'NOT MET'}); B-LTA / B-B {lta / bb:.2f} "
                f"(target <= 3: {'met' if lta / bb <= 3 else 'NOT MET'})"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
