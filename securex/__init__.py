"""securex: encrypted état-civil acts, signatures and confidential exchange for communes."""

__version__ = "0.1.0"
