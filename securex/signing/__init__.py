"""PAdES signing, the demo PKI and validation (no Flask)."""
