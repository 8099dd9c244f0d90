"""What can go wrong talking to the API, as exceptions a caller can tell apart."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from openhands_conversations_client.models import Conversation

# msg_id given to answers that do not carry the spec's error body (a proxy's HTML page, an empty body).
UNEXPECTED_RESPONSE = "ERROR$UNEXPECTED_RESPONSE"


class ClientError(Exception):
    """Base of every error this package raises."""


class ApiError(ClientError):
    """The API answered with an error: the spec's body `{"status": "error", "message", "msg_id"}`.

    `body` is the whole decoded body (it may carry more, e.g. `detail` for 422 or `limit` and
    `current` for 429); `retry_after` is the Retry-After header in seconds when one was sent.
    """

    def __init__(
        self,
        status: int,
        msg_id: str,
        message: str,
        body: dict[str, Any] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{msg_id} (HTTP {status}): {message}")
        self.status = status
        self.msg_id = msg_id
        self.message = message
        self.body: dict[str, Any] = body if body is not None else {}
        self.retry_after = retry_after

    @classmethod
    def from_response(cls, status: int, body: object, text: str, retry_after: float | None = None) -> ApiError:
        """Build the error from an answer's status and decoded body (or its text when not the spec's shape)."""
        if isinstance(body, dict) and isinstance(body.get("msg_id"), str):
            message = body.get("message")
            return cls(status, body["msg_id"], message if isinstance(message, str) else "", body, retry_after)
        snippet = " ".join(text.split())[:200] or "(empty body)"
        return cls(
            status,
            UNEXPECTED_RESPONSE,
            f"the API answered HTTP {status} without an error body: {snippet}",
            body if isinstance(body, dict) else None,
            retry_after,
        )


class ApiUnreachable(ClientError):
    """No answer at all: connection refused, DNS failure, timeout."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"cannot reach {url}: {reason}")
        self.url = url
        self.reason = reason


class MalformedResponse(ClientError):
    """A successful answer whose body does not have the documented shape."""


class WaitTimeout(ClientError):
    """`wait_until_settled` gave up: the conversation was still starting. `last` is what was seen last."""

    def __init__(self, conversation_id: str, seconds: float, last: Conversation) -> None:
        super().__init__(
            f"conversation {conversation_id} still {last.conversation_status} "
            f"({last.runtime_status}) after {seconds:g} s"
        )
        self.conversation_id = conversation_id
        self.seconds = seconds
        self.last = last
