"""Every error the service raises across its layers.

- `ServiceError` and its subclasses: what the API answers with, with the HTTP status and
  OpenHands `msg_id` on the class; one exception handler (`http_errors.py`) turns them into the
  spec's body `{"status": "error", "message": ..., "msg_id": ...}`.
- `WorkflowStepError` and its subclasses: what a workflow step's Lambda raises. Step Functions
  names the error after the class (Lambda's errorType), so the ASL's Retry clauses and
  RecordFailure's classification go through `WORKFLOW_STEP_ERRORS`, built from the classes.
- `StoreOutcome` and its subclasses: what the data-access layer (`dal/`) tells logic when a
  conditional write is refused or AWS asks us to retry; logic decides what each means for the
  caller (retry, 409, 429, ...). They carry no boto3 types.
- `InvalidEnvironment`: a function deployed without what it needs (at import).

AWS's own errors become these in one place: `dal/aws.py` (`translated`, `is_transient`,
`aws_failures_translated`), chosen by the error's code and type.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from conversation_service.models.domain import Conversation


class InvalidEnvironment(RuntimeError):
    """A function was deployed without a variable it needs: raised while Lambda imports it."""


class ServiceError(Exception):
    status_code = 400
    msg_id = "ERROR$UNKNOWN"
    default_message = "Request failed"

    def __init__(self, message: str | None = None, *, headers: dict[str, str] | None = None, **extra: Any) -> None:
        self.message = message or self.default_message
        self.extra = extra
        self.headers = headers or {}
        super().__init__(self.message)


class InvalidRequest(ServiceError):
    status_code = 400
    msg_id = "ERROR$INVALID_REQUEST"


class InvalidConversationId(ServiceError):
    status_code = 400
    msg_id = "ERROR$INVALID_CONVERSATION_ID"
    default_message = "Invalid conversation ID"


class SandboxImageNotSelectable(ServiceError):
    msg_id = "CONFIGURATION$SANDBOX_IMAGE_NOT_SELECTABLE"
    default_message = "The sandbox image cannot be chosen per user"


class SettingsNotFound(ServiceError):
    msg_id = "CONFIGURATION$SETTINGS_NOT_FOUND"
    default_message = "Settings not found"


class AgentNotFound(ServiceError):
    msg_id = "CONFIGURATION$SETTINGS_NOT_FOUND"
    default_message = "Agent specification not found"


class LLMAuthenticationMissing(ServiceError):
    msg_id = "STATUS$ERROR_LLM_AUTHENTICATION"
    default_message = "Error authenticating with the LLM provider. Please check your API key"


class EventSourceNotAuthorised(ServiceError):
    status_code = 403
    msg_id = "EVENT$SOURCE_NOT_AUTHORISED"
    default_message = (
        "This user has not authorised the event's source to create conversations for them "
        "(authorized_event_sources in POST /api/settings)"
    )


class RepositoryNotAllowed(ServiceError):
    msg_id = "STATUS$GIT_REPOSITORY_NOT_ALLOWED"
    default_message = "Repository URL is not allowed"


class GitProviderMismatch(RepositoryNotAllowed):
    default_message = "git_provider does not match the repository's host"


class RepositoryNotAccessible(ServiceError):
    msg_id = "STATUS$GIT_PROVIDER_AUTHENTICATION_ERROR"
    default_message = "Unable to verify access to the repository"


class InvalidBranchName(ServiceError):
    msg_id = "STATUS$GIT_INVALID_BRANCH_NAME"
    default_message = "Invalid branch name"


class BranchNotFound(ServiceError):
    msg_id = "STATUS$GIT_BRANCH_NOT_FOUND"
    default_message = "Branch not found in repository"


class ConversationNotFound(ServiceError):
    status_code = 404
    msg_id = "CONVERSATION$NOT_FOUND"
    default_message = "Conversation not found"


class InvalidPageToken(ServiceError):
    status_code = 400
    msg_id = "ERROR$INVALID_PAGE_ID"
    default_message = "Invalid page_id: pass a next_page_id you received, unchanged, with the same filters"


class ConversationNotStartable(ServiceError):
    status_code = 409
    msg_id = "CONVERSATION$NOT_STARTABLE"
    default_message = "Only a STOPPED or ERROR conversation can be started"


class ConcurrencyLimitReached(ServiceError):
    status_code = 429
    msg_id = "CONCURRENCY_LIMIT_REACHED"
    default_message = "Too many active conversations"


class IdempotencyConflict(ServiceError):
    status_code = 409
    msg_id = "ERROR$IDEMPOTENCY_KEY_REUSED"
    default_message = "This Idempotency-Key was already used with a different request body"


class RequestInProgress(ServiceError):
    """A message sent with an Idempotency-Key still being handled (creates converge instead)."""

    status_code = 409
    msg_id = "ERROR$REQUEST_IN_PROGRESS"
    default_message = "A request with this Idempotency-Key is still in progress; retry shortly"


class ConversationConflict(ServiceError):
    """Transient write contention that did not settle within the retry budget."""

    status_code = 503
    msg_id = "ERROR$TRY_AGAIN"
    default_message = "The service is busy; retry shortly"


class InternalError(ServiceError):
    status_code = 500
    msg_id = "STATUS$ERROR"
    default_message = "Failed to start conversation"


class Unauthorized(ServiceError):
    status_code = 401
    msg_id = "ERROR$UNAUTHORIZED"
    default_message = "Missing or invalid API key"


class ConversationNotAcceptingMessages(ServiceError):
    status_code = 409
    msg_id = "CONVERSATION$NOT_RUNNING"
    default_message = "This conversation is not running: start it again to send it messages"


class NoConfirmationPending(ServiceError):
    status_code = 409
    msg_id = "CONVERSATION$NO_CONFIRMATION_PENDING"
    default_message = "The agent is not waiting for a confirmation (or it was already answered)"


class WorkspaceNotPublished(ServiceError):
    status_code = 404
    msg_id = "CONVERSATION$WORKSPACE_NOT_PUBLISHED"
    default_message = "The sandbox has not published its workspace yet (it does when the agent stops working)"


class ConversationEventLimitReached(ServiceError):
    status_code = 413
    msg_id = "SANDBOX$EVENT_LIMIT_REACHED"
    default_message = "This conversation has reached its limit of stored events"


class SandboxTokenExpired(ServiceError):
    status_code = 401
    msg_id = "ERROR$UNAUTHORIZED"
    default_message = "The sandbox token is no longer valid: the conversation is not starting or running"


class SandboxNoLongerWanted(ServiceError):
    status_code = 409
    msg_id = "SANDBOX$CONVERSATION_NOT_STARTING"
    default_message = "This conversation is no longer starting; stop the sandbox"


class SandboxAddressRefused(ServiceError):
    status_code = 400
    msg_id = "SANDBOX$AGENT_SERVER_ADDRESS_REFUSED"
    default_message = "The agent-server URL must be this sandbox's own address"


class PoolSandboxGone(ServiceError):
    status_code = 410
    msg_id = "SANDBOX$POOL_SANDBOX_RETIRED"
    default_message = "This pool sandbox was retired or already assigned; stop"


# -- events from integrations ---------------------------------------------------------------------
class EventRefused(Exception):
    """Final: the event will never create a conversation as it is (logic/event_intake.py sends it
    to the dead-letter queue with this reason)."""

    def __init__(self, msg_id: str, message: str, detail: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.msg_id = msg_id
        self.message = message
        self.detail = detail or []


# -- git remotes (adapters/git_remote.py) ---------------------------------------------------------
class RemoteAccessDenied(Exception):
    """The remote refused us: bad or missing credentials, or no such repository."""


class RemoteUnavailable(Exception):
    """The remote could not be reached or did not answer in time."""


# -- workflow steps -------------------------------------------------------------------------------
class WorkflowStepError(Exception):
    retryable: ClassVar[bool] = False


class RetryableError(WorkflowStepError):
    """A transient AWS failure (throttling, 5xx, a timeout) that outlasted botocore's retries:
    the state machine runs the step again (its Retry clauses name this class)."""

    retryable = True


class ConversationNotStarting(WorkflowStepError):
    """The conversation left STARTING (stopped or deleted) while the workflow ran."""


class SandboxLaunchFailed(WorkflowStepError):
    """ECS would not start the task (configuration, permissions, a bad request)."""


class InvalidWorkflowInput(WorkflowStepError):
    """A step's input does not fit its model (models/workflow_steps.py): the fields and what is
    wrong with them, never their values. Not retried: the same input fails the same way."""


class SandboxLaunchThrottled(SandboxLaunchFailed):
    """ECS throttled RunTask or had no Fargate capacity: worth trying again after a backoff
    (LaunchSandbox's Retry names this class)."""

    retryable = True


WORKFLOW_STEP_ERRORS: dict[str, type[WorkflowStepError]] = {
    error.__name__: error
    for error in (
        RetryableError,
        ConversationNotStarting,
        InvalidWorkflowInput,
        SandboxLaunchFailed,
        SandboxLaunchThrottled,
    )
}


# -- the data-access layer's outcomes --------------------------------------------------------------
class StoreOutcome(Exception):
    """A refusal or a request to retry from a store in `dal/`, in domain terms."""


class WriteContention(StoreOutcome):
    """AWS asked us to retry: throttling, a conflicting transaction, unprocessed keys, a 5xx or
    the network giving up (`dal/aws.py` `is_transient`)."""


class ConversationIdTaken(StoreOutcome):
    """The id already exists: a drawn id collided (astronomically rare; the caller draws another),
    or a keyed create finds the conversation its first attempt wrote (`existing`, as stored)."""

    def __init__(self, existing: Conversation | None = None) -> None:
        super().__init__("conversation id taken")
        self.existing = existing


class ActiveLimitReached(StoreOutcome):
    """The user's active-slot counter is at the limit the write asked for."""

    def __init__(self, current: int) -> None:
        super().__init__(f"{current} active conversations")
        self.current = current


class ConversationNoLongerActive(StoreOutcome):
    """The conversation chosen to close was closed meanwhile by someone else."""


class ConversationChanged(StoreOutcome):
    """The conversation is no longer as the caller read it (status, run, or gone): read it again."""


class PageTokenInvalid(StoreOutcome):
    """Not a token this service issued to this user."""


class SealedForAConversation(StoreOutcome, ValueError):
    """A conversation's sealed value was opened without naming the conversation."""


class InboxRefused(StoreOutcome):
    """The conversation's condition failed: not the user's, not active, or (for a confirmation)
    nothing pending."""


class ChannelContention(StoreOutcome):
    """The conversation's channel kept changing under us within the retry budget."""


class WorkflowNotWaiting(StoreOutcome):
    """The task token is no longer valid: the step timed out, failed or was stopped."""


class WorkflowStartRetryable(StoreOutcome):
    """Step Functions could not start the execution now (throttling, a 5xx): deliver again."""


class WorkflowStartRefused(StoreOutcome):
    """Step Functions refused the execution (a bad request, a missing state machine)."""


class EventsNotPublished(StoreOutcome):
    """EventBridge refused some entries (throttling, internal errors): retry."""


class EventBusMissing(StoreOutcome):
    """The bus does not exist: a deployment problem, retrying will not fix it."""
