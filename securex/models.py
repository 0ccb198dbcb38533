"""Imports every model so that `Base.metadata` knows every table (migrations, tests)."""

from securex.accounts import models as accounts_models
from securex.audit import models as audit_models
from securex.comedec import models as comedec_models
from securex.exchange import models as exchange_models
from securex.jobs import models as jobs_models
from securex.registry import models as registry_models
from securex.vault import models as vault_models

__all__ = [
    "accounts_models",
    "audit_models",
    "comedec_models",
    "exchange_models",
    "jobs_models",
    "registry_models",
    "vault_models",
]
