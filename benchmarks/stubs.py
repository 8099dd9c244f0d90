"""In-process answers for what is not AWS: DNS and the git remote (as moto answers for AWS).

The benchmarks measure the handler's own work; a git ls-remote to github.com (100-300 ms over the
internet) would drown it, and this machine has no internet anyway.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from conversation_service.adapters.git_remote import RemoteRefs

PUBLIC_ADDRESS = "140.82.112.3"
REFS = RemoteRefs(
    branches={"main": "a" * 40, "develop": "b" * 40},
    default_branch="main",
)


def public_dns(host: str) -> Iterable[str]:
    return [PUBLIC_ADDRESS]


def remote_refs(url: str, **_: Any) -> RemoteRefs:
    return REFS


def service_with_stub_remote(module: Any) -> Any:
    """Make `module`'s routes use a ConversationService whose DNS and git remote are answered here.

    `module` is the loaded ApiFunction handler module (it calls `conversation_service()`)."""
    from conversation_service import services
    from conversation_service.config import get_config
    from conversation_service.dal.context_store import ContextStore
    from conversation_service.logic.conversations import ConversationService
    from conversation_service.logic.repositories import RepositoryResolver, RepositoryVerifier

    config = get_config()
    service = ConversationService(
        config,
        services.conversation_store(),
        services.user_store(),
        ContextStore(config.context_bucket),
        resolver=RepositoryResolver(config, resolve_addresses=public_dns),
        verifier=RepositoryVerifier(config, read_refs=remote_refs),
    )
    module.conversation_service = lambda: service
    return service
