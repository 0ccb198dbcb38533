"""The fonts securex embeds in the PDFs it produces (evidence files, acts and copies,
signature stamps): DejaVu, from Debian's fonts-dejavu-core. Embedded fonts only, so
that every PDF renders the same everywhere and stays PDF/A."""

from __future__ import annotations

import logging
from pathlib import Path

from securex.errors import ConfigError

FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")

# fontTools says, for every subset of DejaVu, that it drops a table it does not know
# (FFTM, FontForge's timestamps): true, harmless, and noise in every log.
logging.getLogger("fontTools.subset").setLevel(logging.ERROR)


def font_path(name: str = "DejaVuSans.ttf") -> str:
    path = FONT_DIR / name
    if not path.exists():
        raise ConfigError(
            f"Police {path} absente : installez le paquet Debian « fonts-dejavu-core »."
        )
    return str(path)
