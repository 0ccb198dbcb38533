"""Small PDFs for the signing tests, written with pyHanko's writer."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.generic import pdf_name
from pyhanko.pdf_utils.writer import PageObject, PdfFileWriter


def one_page_pdf(text: str = "Acte de naissance n. 1") -> bytes:
    writer = PdfFileWriter(stream_xrefs=False)
    font = generic.DictionaryObject(
        {
            pdf_name("/Type"): pdf_name("/Font"),
            pdf_name("/Subtype"): pdf_name("/Type1"),
            pdf_name("/BaseFont"): pdf_name("/Helvetica"),
        }
    )
    resources = generic.DictionaryObject(
        {pdf_name("/Font"): generic.DictionaryObject({pdf_name("/F1"): writer.add_object(font)})}
    )
    escaped = text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
    stream = generic.StreamObject(stream_data=f"BT /F1 18 Tf 72 760 Td ({escaped}) Tj ET".encode())
    page = PageObject(
        contents=writer.add_object(stream), media_box=(0, 0, 595, 842), resources=resources
    )
    writer.insert_page(page)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def nss_trusting(folder: Path, roots_pem: bytes) -> str:
    """An NSS database (as poppler's pdfsig reads) trusting `roots_pem`."""
    folder.mkdir()
    roots = folder / "roots.pem"
    roots.write_bytes(roots_pem)
    db = f"sql:{folder}"
    subprocess.run(["certutil", "-N", "-d", db, "--empty-password"], check=True)
    subprocess.run(
        ["certutil", "-A", "-d", db, "-n", "securex-root", "-t", "CT,C,C", "-i", str(roots)],
        check=True,
    )
    return db


def pdfsig(nss: str, pdf: Path) -> str:
    # pdfsig exits 0 even on a digest mismatch: callers read what it says.
    return subprocess.run(
        ["pdfsig", "-nssdir", nss, str(pdf)], capture_output=True, text=True
    ).stdout
