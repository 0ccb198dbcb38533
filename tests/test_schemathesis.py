"""schemathesis against /api/v1/openapi.json: every operation, called with generated
input (valid and invalid) as a notary, the API's main client. No answer is a server
error, and every answer conforms to the document: its status is documented, its
content type and its body match the schema.

Two of schemathesis' checks are left out, with their reason:
- "invalid authentication is refused": the test sends a valid token on every call
  (schemathesis would otherwise generate one it believes invalid); tests/test_authz_matrix.py
  covers every route with missing, wrong and revoked tokens;
- "schema-valid input is accepted": the document states each field's shape, not the rules
  between fields (from ≤ to, a notary's capacities, a commune in the client's scope), so a
  well-shaped request may rightly get 422. A refusal must still be a documented status with
  a problem+json body, which the other checks hold."""

from __future__ import annotations

from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import ignored_auth, positive_data_acceptance

MDM = "40192"
# Binary bodies (a PDF to validate, a tus PATCH) go as they are, like octet streams.
schemathesis.serializer.alias(
    ["application/pdf", "application/offset+octet-stream"], "application/octet-stream"
)
EXAMPLES = 50  # per operation; derandomized, so CI runs the same calls every time


def test_every_api_operation_holds_under_generated_input(app: Any, make: Any) -> None:
    make.tenant()
    _, token = make.client("notaire", (MDM,))
    schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", app)
    failures: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) > 20, "the document lists the API's operations"
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        def call(case: Any) -> None:
            response = case.call(headers={"Authorization": f"Bearer {token}"})
            case.validate_response(
                response, excluded_checks=[ignored_auth, positive_data_acceptance]
            )

        try:
            call()
        except BaseException as exc:
            if isinstance(exc, KeyboardInterrupt):
                raise
            failures.append(f"{operation.label}: {str(exc)[:800]}")
    assert not failures, f"{len(failures)} operation(s) failed:\n\n" + "\n\n".join(failures)
