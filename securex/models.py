"""Imports every model so that `Base.metadata` knows every table (migrations, tests)."""

from securex.accounts import models as accounts_models
from securex.audit import models as audit_models
from securex.vault import models as vault_models

__all__ = ["accounts_models", "audit_models", "vault_models"]
