"""User settings: partial updates, secrets sealed and never shown back."""

from __future__ import annotations

from conversation_service.config import ServiceConfig
from conversation_service.logic.clock import now_iso
from conversation_service.logic.repositories import provider_token_key
from conversation_service.models.api import GitProvider, SettingsUpdate, SettingsView
from conversation_service.models.domain import KNOWN_AGENTS, AgentDefaults, UserSecrets, UserSettings
from conversation_service.models.errors import (
    AgentNotFound,
    InvalidRequest,
    SandboxImageNotSelectable,
    SettingsNotFound,
)
from conversation_service.ports import UserStore

_PLAIN_FIELDS = (
    "agent",
    "max_iterations",
    "confirmation_mode",
    "security_analyzer",
    "llm_model",
    "llm_base_url",
    "authorized_event_sources",
)


class SettingsService:
    def __init__(self, config: ServiceConfig, users: UserStore) -> None:
        self._config = config
        self._users = users

    def view(self, user_id: str) -> SettingsView:
        settings = self._users.get_settings(user_id)
        if settings is None:
            raise SettingsNotFound()
        return self._view(settings)

    def update(self, user_id: str, update: SettingsUpdate) -> SettingsView:
        if update.agent is not None and update.agent not in KNOWN_AGENTS:
            raise AgentNotFound(f"Agent specification not found: choose one of {', '.join(sorted(KNOWN_AGENTS))}")
        image = update.sandbox_base_container_image
        if image is not None and image != self._config.default_sandbox_image:
            # Every sandbox runs the task definition's image, which carries the bootstrap that
            # holds the sandbox token and drops privileges: a user's image would run neither.
            raise SandboxImageNotSelectable(
                f"sandbox_base_container_image cannot be chosen: every sandbox runs "
                f"{self._config.default_sandbox_image} (the stack's SandboxImage parameter)"
            )
        current = self._users.get_settings(user_id) or UserSettings(user_id=user_id)
        secrets = self._users.open_secrets(current) if current.sealed_secrets else UserSecrets()
        changes = update.model_dump(include=set(_PLAIN_FIELDS), exclude_unset=True)
        if changes.get("authorized_event_sources", []) is None:
            del changes["authorized_event_sources"]  # null: unchanged ([] revokes every source)
        settings = current.model_copy(update={**changes, "updated_at": now_iso()})
        if update.llm_api_key is not None:
            secrets.llm_api_key = update.llm_api_key or None
        tokens = {provider.value: token for provider, token in (update.provider_tokens or {}).items()}
        if GitProvider.ENTERPRISE.value in tokens:
            raise InvalidRequest(
                'Enterprise tokens are kept per host: give them as enterprise_tokens {"<host>": "<token>"}'
            )
        for host, token in (update.enterprise_tokens or {}).items():
            if host.lower() not in self._config.git_extra_hosts:
                raise InvalidRequest(f"{host!r} is not one of the configured enterprise git hosts")
            tokens[provider_token_key(GitProvider.ENTERPRISE.value, host)] = token
        for key, token in tokens.items():
            if token:
                secrets.provider_tokens[key] = token
            else:
                secrets.provider_tokens.pop(key, None)
        self._users.save_settings(settings, secrets)
        return self._view(settings)

    def _view(self, settings: UserSettings) -> SettingsView:
        defaults = AgentDefaults()
        return SettingsView(
            agent=settings.agent or defaults.agent,
            max_iterations=settings.max_iterations or defaults.max_iterations,
            confirmation_mode=(
                settings.confirmation_mode if settings.confirmation_mode is not None else defaults.confirmation_mode
            ),
            security_analyzer=settings.security_analyzer,
            llm_model=settings.llm_model,
            llm_base_url=settings.llm_base_url,
            llm_api_key_set=settings.llm_api_key_set,
            provider_tokens_set={provider: True for provider in settings.provider_tokens_set},
            sandbox_base_container_image=self._config.default_sandbox_image,  # the image that runs
            authorized_event_sources=settings.authorized_event_sources,
            updated_at=settings.updated_at,
        )
