"""The taxonomy of audit events, named "source:subject:action"."""

from enum import StrEnum


class EventType(StrEnum):
    # Logins and sessions
    LOGIN_SUCCEEDED = "accounts:login:succeeded"
    LOGIN_FAILED = "accounts:login:failed"
    LOGIN_RATE_LIMITED = "accounts:login:rate-limited"
    ADDRESS_RATE_LIMITED = "accounts:address:rate-limited"
    ACCOUNT_LOCKED = "accounts:user:locked"
    LOGOUT = "accounts:session:logout"
    LOGOUT_EVERYWHERE = "accounts:session:logout-everywhere"
    # Second factor
    TOTP_ENROLLED = "accounts:totp:enrolled"
    TOTP_RESET = "accounts:totp:reset"
    TOTP_REPLAY_REFUSED = "accounts:totp:replay-refused"
    RECOVERY_CODE_USED = "accounts:recovery-code:used"
    # Tenants, users, roles
    TENANT_CREATED = "accounts:tenant:created"
    USER_CREATED = "accounts:user:created"
    USER_DISABLED = "accounts:user:disabled"
    USER_ENABLED = "accounts:user:enabled"
    USER_ROLE_CHANGED = "accounts:user:role-changed"
    # API clients
    CLIENT_CREATED = "accounts:api-client:created"
    CLIENT_REVOKED = "accounts:api-client:revoked"
    # Personal API tokens
    PERSONAL_TOKEN_CREATED = "accounts:personal-token:created"  # noqa: S105 (an event name)
    PERSONAL_TOKEN_REVOKED = "accounts:personal-token:revoked"  # noqa: S105 (an event name)
    # Vault
    VAULT_TENANT_KEY_CREATED = "vault:tenant-key:created"
    VAULT_TENANT_KEY_ROTATED = "vault:tenant-key:rotated"
    VAULT_MASTER_KEY_ROTATED = "vault:master-key:rotated"
    VAULT_OBJECT_SHREDDED = "vault:object:shredded"
    VAULT_FILE_ENCRYPTED = "vault:file:encrypted"
    VAULT_FILE_DECRYPTED = "vault:file:decrypted"
    # Signing
    CERTIFICATE_ISSUED = "signing:certificate:issued"
    CERTIFICATE_REVOKED = "signing:certificate:revoked"
    DOCUMENT_SIGNED = "signing:document:signed"
    DOCUMENT_RENEWED = "signing:document:timestamp-renewed"
    # Registry (état civil)
    ACT_DRAFTED = "registry:act:drafted"
    ACT_UPDATED = "registry:act:updated"
    ACT_SUBMITTED = "registry:act:submitted"
    ACT_SIGNED = "registry:act:signed"
    ACT_IMPORTED = "registry:act:imported"
    ACT_VIEWED = "registry:act:viewed"
    ACT_SEARCHED = "registry:act:searched"
    SCAN_ATTACHED = "registry:scan:attached"
    MENTION_DRAFTED = "registry:mention:drafted"
    MENTION_SIGNED = "registry:mention:signed"
    AVIS_SENT = "registry:avis:sent"
    AVIS_LISTED = "registry:avis:listed"
    AVIS_VIEWED = "registry:avis:viewed"
    QUEUE_VIEWED = "registry:queue:viewed"
    AVIS_SIGNED = "registry:avis:signed"
    AVIS_APPLIED = "registry:avis:applied"
    AVIS_REJECTED = "registry:avis:rejected"
    DELIVERY_REQUESTED = "registry:delivery:requested"
    DELIVERY_ISSUED = "registry:delivery:issued"
    DELIVERY_VERIFIED = "registry:delivery:verified"
    DOCUMENT_DOWNLOADED = "registry:document:downloaded"
    SIGNATURE_FAILED = "registry:signature:failed"
    BATCH_REQUESTED = "registry:batch:requested"
    # COMEDEC-style exchange
    REQUEST_RECEIVED = "comedec:act-request:received"
    REQUEST_STATUS_CHANGED = "comedec:act-request:status-changed"
    REQUEST_VIEWED = "comedec:act-request:viewed"
    REQUEST_ACCEPTED = "comedec:act-request:accepted"
    REQUEST_ACKNOWLEDGED = "comedec:act-request:acknowledged"
    REQUESTS_PURGED = "comedec:act-request:purged"
    VERIFICATION_ANSWERED = "comedec:verification:answered"
    WEBHOOK_REGISTERED = "comedec:webhook:registered"
    WEBHOOK_DISABLED = "comedec:webhook:disabled"
    WEBHOOK_DELIVERED = "comedec:webhook:delivered"
    WEBHOOK_FAILED = "comedec:webhook:failed"
    COMMUNE_SETTINGS_CHANGED = "comedec:settings:changed"
    # Audit
    EVIDENCE_ISSUED = "audit:evidence:issued"
    # Instance
    INSTANCE_INITIALISED = "instance:instance:initialised"
