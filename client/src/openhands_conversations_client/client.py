"""`ConversationsClient`: one method per API operation, typed results, `ApiError` on error bodies."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import quote, urlsplit

import requests

from openhands_conversations_client.errors import ApiError, ApiUnreachable, ClientError, MalformedResponse, WaitTimeout
from openhands_conversations_client.models import (
    Accepted,
    AgentEvent,
    AgentEventPage,
    Conversation,
    ConversationAction,
    ConversationPage,
    ConversationSummary,
    CreatedConversation,
    CreateMicroagent,
    Quota,
    Settings,
    SuggestedTask,
    Workspace,
)
from openhands_conversations_client.version import __version__

DEFAULT_ENDPOINT = "http://127.0.0.1:3000/api"  # the local stack (`make dev`)
DEFAULT_TIMEOUT_SECONDS = 30.0
DEFAULT_WAIT_SECONDS = 1800.0  # the workflow's own sandbox start timeout
# While waiting, these answers mean "try again at the next poll" (a few times in a row at most).
TRANSIENT_HTTP_STATUSES = frozenset({429, 502, 503, 504})
MAX_CONSECUTIVE_TRANSIENT_FAILURES = 3
MAX_PAGE_SIZE = 100  # the service's largest `limit`
MAX_EVENTS_WAIT_SECONDS = 20  # the service's largest `wait` on the events


def api_root(endpoint: str) -> str:
    """The API's root URL, ending in `/api`: `http://h:3000`, `http://h:3000/` and `http://h:3000/api/` agree."""
    url = endpoint.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"endpoint must be an http:// or https:// URL, got {endpoint!r}")
    if parts.username or parts.password:
        raise ValueError("endpoint must not carry credentials: give the key with --api-key or CONVO_API_KEY")
    if parts.query or parts.fragment:
        raise ValueError(f"endpoint must not have a query or fragment, got {endpoint!r}")
    return url if url.endswith("/api") else f"{url}/api"


def _conversation_path(conversation_id: str, action: str = "") -> str:
    # Quoted whole: an id is one path segment, never a way to reach another path.
    return f"/conversations/{quote(conversation_id, safe='')}{action}"


def _retry_after_seconds(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None  # the HTTP-date form: not worth a parser here


def _why_unreachable(error: requests.RequestException, timeout: float) -> str:
    if isinstance(error, requests.Timeout):
        return f"no answer within {timeout:g} s"
    found = re.search(r"\[Errno -?\d+\] [^'\")]+", str(error))
    return found.group(0) if found else type(error).__name__


class ConversationsClient:
    """Client of the OpenHands conversations API.

    `base_url` is the API root with or without the trailing `/api`; `api_key` is sent as
    `Authorization: Bearer <key>` (the deployed API needs one, the local stack none); `timeout` bounds
    each HTTP request in seconds.
    """

    def __init__(
        self,
        base_url: str = DEFAULT_ENDPOINT,
        api_key: str | None = None,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        session: requests.Session | None = None,
    ) -> None:
        self.api_url = api_root(base_url)
        self.timeout = timeout
        self._session = session or requests.Session()
        self._session.headers["User-Agent"] = f"openhands-conversations-client/{__version__}"
        self._session.headers["Accept"] = "application/json"
        if api_key:
            self._session.headers["Authorization"] = f"Bearer {api_key}"

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> ConversationsClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- conversations ----------------------------------------------------------------------
    def create(
        self,
        repository: str | None = None,
        *,
        git_provider: str | None = None,
        selected_branch: str | None = None,
        initial_user_msg: str | None = None,
        image_urls: Sequence[str] | None = None,
        replay_json: str | None = None,
        suggested_task: SuggestedTask | Mapping[str, Any] | None = None,
        create_microagent: CreateMicroagent | Mapping[str, Any] | None = None,
        conversation_instructions: str | None = None,
        mcp_config: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> CreatedConversation:
        """`POST /api/conversations`. Fields left as None are not sent (the service's defaults apply)."""
        body: dict[str, Any] = {
            "repository": repository,
            "git_provider": git_provider,
            "selected_branch": selected_branch,
            "initial_user_msg": initial_user_msg,
            "image_urls": list(image_urls) if image_urls is not None else None,
            "replay_json": replay_json,
            "suggested_task": suggested_task.to_json() if isinstance(suggested_task, SuggestedTask) else suggested_task,
            "create_microagent": create_microagent.to_json()
            if isinstance(create_microagent, CreateMicroagent)
            else create_microagent,
            "conversation_instructions": conversation_instructions,
            "mcp_config": mcp_config,
        }
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        sent = {name: value for name, value in body.items() if value is not None}
        return CreatedConversation.from_json(self._call("POST", "/conversations", json=sent, headers=headers))

    def get(self, conversation_id: str) -> Conversation:
        """`GET /api/conversations/{id}`: status, runtime status, timeline, error code and message."""
        return Conversation.from_json(self._call("GET", _conversation_path(conversation_id)))

    def list_page(
        self,
        page_id: str | None = None,
        limit: int | None = None,
        *,
        selected_repository: str | None = None,
        conversation_trigger: str | None = None,
    ) -> ConversationPage:
        """One page of `GET /api/conversations`, newest first; pass the previous page's `next_page_id`
        (with the same filters) for the next. `limit` is 1-100 (the service's default 20)."""
        query = {
            "page_id": page_id,
            "limit": limit,
            "selected_repository": selected_repository,
            "conversation_trigger": conversation_trigger,
        }
        params = {name: value for name, value in query.items() if value is not None}
        return ConversationPage.from_json(self._call("GET", "/conversations", params=params))

    def list(
        self,
        *,
        page_size: int | None = None,
        limit: int | None = None,
        selected_repository: str | None = None,
        conversation_trigger: str | None = None,
    ) -> Iterator[ConversationSummary]:
        """Every conversation (or the first `limit`), newest first, fetching pages of `page_size` as it goes."""
        if limit is not None and limit <= 0:
            return
        yielded = 0
        page_id: str | None = None
        seen_pages: set[str] = set()
        while True:
            wanted = page_size if limit is None else min(page_size or MAX_PAGE_SIZE, limit - yielded)
            page = self.list_page(
                page_id,
                wanted,
                selected_repository=selected_repository,
                conversation_trigger=conversation_trigger,
            )
            for conversation in page.results:
                yield conversation
                yielded += 1
                if limit is not None and yielded >= limit:
                    return
            if page.next_page_id is None:
                return
            if page.next_page_id in seen_pages:
                raise MalformedResponse(f"the API sent page id {page.next_page_id!r} twice")
            seen_pages.add(page.next_page_id)
            page_id = page.next_page_id

    def stop(self, conversation_id: str) -> ConversationAction:
        """`POST /api/conversations/{id}/stop`: STOPPED, its sandbox stopped, its slot freed (safe to repeat)."""
        return ConversationAction.from_json(self._call("POST", _conversation_path(conversation_id, "/stop")))

    def start(self, conversation_id: str) -> ConversationAction:
        """`POST /api/conversations/{id}/start`: a STOPPED or ERROR conversation starts again (STARTING)."""
        return ConversationAction.from_json(self._call("POST", _conversation_path(conversation_id, "/start")))

    def rename(self, conversation_id: str, title: str) -> None:
        """`PATCH /api/conversations/{id}` with the new title."""
        self._call("PATCH", _conversation_path(conversation_id), json={"title": title})

    def delete(self, conversation_id: str) -> None:
        """`DELETE /api/conversations/{id}`: the conversation, its sandbox and its stored context."""
        self._call("DELETE", _conversation_path(conversation_id))

    def wait_until_settled(
        self,
        conversation_id: str,
        on_change: Callable[[Conversation], None] | None = None,
        timeout: float = DEFAULT_WAIT_SECONDS,
        poll_interval: float = 1.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> Conversation:
        """Poll until the conversation is no longer STARTING and return it (RUNNING, ERROR, STOPPED...).

        `on_change` receives the conversation each time its status, runtime status or timeline moves
        (and once at first sight). A few transient failures in a row (no answer, 429, 502-504) are
        polled through; `WaitTimeout` is raised after `timeout` seconds; `sleep` waits between polls
        (a progress display passes one that keeps redrawing).
        """
        deadline = time.monotonic() + timeout
        last: Conversation | None = None
        last_seen: tuple[object, ...] | None = None
        failures = 0
        while True:
            try:
                conversation = self.get(conversation_id)
            except (ApiUnreachable, ApiError) as error:
                transient = isinstance(error, ApiUnreachable) or error.status in TRANSIENT_HTTP_STATUSES
                failures += 1
                if not transient or failures > MAX_CONSECUTIVE_TRANSIENT_FAILURES:
                    raise
            else:
                failures = 0
                last = conversation
                seen = (
                    conversation.conversation_status,
                    conversation.runtime_status,
                    len(conversation.timeline),
                    conversation.error_code,
                )
                if seen != last_seen:
                    last_seen = seen
                    if on_change is not None:
                        on_change(conversation)
                if conversation.is_settled:
                    return conversation
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                if last is None:
                    raise ClientError(f"no answer about conversation {conversation_id} within {timeout:g} s")
                raise WaitTimeout(conversation_id, timeout, last)
            sleep(min(poll_interval, remaining))

    # -- the running conversation -------------------------------------------------------------
    def events_page(
        self, conversation_id: str, page_id: str | None = None, limit: int | None = None, wait: int | None = None
    ) -> AgentEventPage:
        """One page of `GET /api/conversations/{id}/events`, oldest first from `page_id`. With `wait`
        (seconds, up to 20) an empty page is answered only when a newer event exists or time is up."""
        query = {"page_id": page_id, "limit": limit, "wait": wait}
        params = {name: value for name, value in query.items() if value is not None}
        return AgentEventPage.from_json(
            self._call("GET", _conversation_path(conversation_id, "/events"), params=params, extra_timeout=wait or 0)
        )

    def events(self, conversation_id: str, page_id: str | None = None) -> Iterator[AgentEvent]:
        """Every event stored so far, oldest first, page after page."""
        seen: set[str] = set()
        while True:
            page = self.events_page(conversation_id, page_id, MAX_PAGE_SIZE)
            yield from page.results
            if not page.results or page.next_page_id is None or page.next_page_id in seen:
                return
            seen.add(page.next_page_id)
            page_id = page.next_page_id

    def follow_events(
        self,
        conversation_id: str,
        page_id: str | None = None,
        wait: int = MAX_EVENTS_WAIT_SECONDS,
        keep_going: Callable[[], bool] = lambda: True,
    ) -> Iterator[AgentEvent]:
        """The events stored so far, then each new one as it arrives (long polls of `wait` seconds),
        for as long as `keep_going()` says. A few transient failures in a row are polled through."""
        failures = 0
        while keep_going():
            try:
                page = self.events_page(conversation_id, page_id, MAX_PAGE_SIZE, wait)
            except (ApiUnreachable, ApiError) as error:
                transient = isinstance(error, ApiUnreachable) or error.status in TRANSIENT_HTTP_STATUSES
                failures += 1
                if not transient or failures > MAX_CONSECUTIVE_TRANSIENT_FAILURES:
                    raise
                time.sleep(min(2.0**failures, 10.0))
                continue
            failures = 0
            yield from page.results
            page_id = page.next_page_id or page_id

    def send_message(
        self,
        conversation_id: str,
        text: str,
        image_urls: Sequence[str] | None = None,
        idempotency_key: str | None = None,
    ) -> Accepted:
        """`POST /api/conversations/{id}/messages`: delivered to the agent once, in order (202)."""
        body: dict[str, Any] = {"text": text}
        if image_urls:
            body["image_urls"] = list(image_urls)
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        return Accepted.from_json(
            self._call("POST", _conversation_path(conversation_id, "/messages"), json=body, headers=headers)
        )

    def confirm(self, conversation_id: str, accept: bool, reason: str | None = None) -> Accepted:
        """`POST /api/conversations/{id}/confirm`: run (accept) or refuse (reject) the pending action."""
        body: dict[str, Any] = {"accept": accept}
        if reason is not None:
            body["reason"] = reason
        return Accepted.from_json(self._call("POST", _conversation_path(conversation_id, "/confirm"), json=body))

    def workspace(self, conversation_id: str) -> Workspace:
        """`GET /api/conversations/{id}/workspace`: branch, HEAD, changed files and the diff."""
        return Workspace.from_json(self._call("GET", _conversation_path(conversation_id, "/workspace")))

    # -- settings and quota -----------------------------------------------------------------
    def settings(self) -> Settings:
        """`GET /api/settings` (secrets are reported as set or not, never returned)."""
        return Settings.from_json(self._call("GET", "/settings"))

    def update_settings(
        self,
        *,
        agent: str | None = None,
        max_iterations: int | None = None,
        confirmation_mode: bool | None = None,
        security_analyzer: str | None = None,
        llm_model: str | None = None,
        llm_base_url: str | None = None,
        llm_api_key: str | None = None,
        provider_tokens: Mapping[str, str] | None = None,
        enterprise_tokens: Mapping[str, str] | None = None,
        sandbox_base_container_image: str | None = None,
        authorized_event_sources: Sequence[str] | None = None,
    ) -> Settings:
        """`POST /api/settings`: fields left as None keep their value; "" clears a secret;
        `enterprise_tokens` are keyed by the enterprise host they may be sent to;
        `authorized_event_sources` replaces the list ([] allows no integration)."""
        body: dict[str, Any] = {
            "agent": agent,
            "max_iterations": max_iterations,
            "confirmation_mode": confirmation_mode,
            "security_analyzer": security_analyzer,
            "llm_model": llm_model,
            "llm_base_url": llm_base_url,
            "llm_api_key": llm_api_key,
            "provider_tokens": dict(provider_tokens) if provider_tokens is not None else None,
            "enterprise_tokens": dict(enterprise_tokens) if enterprise_tokens is not None else None,
            "sandbox_base_container_image": sandbox_base_container_image,
            "authorized_event_sources": list(authorized_event_sources)
            if authorized_event_sources is not None
            else None,
        }
        sent = {name: value for name, value in body.items() if value is not None}
        return Settings.from_json(self._call("POST", "/settings", json=sent))

    def quota(self) -> Quota:
        """`GET /api/quota`: the active-conversation limit and how much of it is used."""
        return Quota.from_json(self._call("GET", "/quota"))

    # -- HTTP ---------------------------------------------------------------------------------
    def _call(
        self,
        method: str,
        path: str,
        *,
        json: dict[str, Any] | None = None,
        params: Mapping[str, str | int] | None = None,
        headers: Mapping[str, str] | None = None,
        extra_timeout: float = 0,
    ) -> Any:
        url = self.api_url + path
        try:
            response = self._session.request(
                method, url, json=json, params=params, headers=headers, timeout=self.timeout + extra_timeout
            )
        except requests.RequestException as error:
            raise ApiUnreachable(url, _why_unreachable(error, self.timeout)) from error
        try:
            body: Any = response.json() if response.content else None
        except ValueError:
            body = None
        if not response.ok:
            raise ApiError.from_response(
                response.status_code, body, response.text, _retry_after_seconds(response.headers.get("Retry-After"))
            )
        if response.content and body is None:
            raise MalformedResponse(f"{method} {path}: HTTP {response.status_code} with a body that is not JSON")
        return body
