"""Every background job handler and periodic task of securex, registered with
`securex.jobs.service` by importing the modules that declare them. Whatever runs jobs
(a web process's job thread, `securex worker`, the tests' runtime) calls `load()`."""

from __future__ import annotations


def load() -> None:
    from securex import rotation, seal  # noqa: F401 (key rotation, audit.checkpoint)
    from securex.comedec import jobs as comedec_jobs  # noqa: F401 (issue, webhooks, purge)
    from securex.exchange import jobs as exchange_jobs  # noqa: F401 (plis)
    from securex.registry import batch, renewal  # noqa: F401 (batch signing, archive)
