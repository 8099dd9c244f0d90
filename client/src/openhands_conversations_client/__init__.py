"""Python client and `convo` command line for the OpenHands conversations API.

from openhands_conversations_client import ConversationsClient

with ConversationsClient("http://127.0.0.1:3000/api") as api:
    created = api.create("user/repo", selected_branch="main", initial_user_msg="hi")
    final = api.wait_until_settled(created.conversation_id, on_change=lambda c: print(c.runtime_status))
    print(final.conversation_status, final.error_code)
"""

from openhands_conversations_client.client import DEFAULT_ENDPOINT, ConversationsClient, api_root
from openhands_conversations_client.errors import (
    ApiError,
    ApiUnreachable,
    ClientError,
    MalformedResponse,
    WaitTimeout,
)
from openhands_conversations_client.models import (
    Accepted,
    AgentEvent,
    AgentEventPage,
    ChangedFile,
    Conversation,
    ConversationAction,
    ConversationPage,
    ConversationSummary,
    CreatedConversation,
    CreateMicroagent,
    Quota,
    Settings,
    StartHop,
    SuggestedTask,
    TimelineEntry,
    Workspace,
)
from openhands_conversations_client.version import __version__

__all__ = [
    "DEFAULT_ENDPOINT",
    "Accepted",
    "AgentEvent",
    "AgentEventPage",
    "ApiError",
    "ApiUnreachable",
    "ChangedFile",
    "ClientError",
    "Conversation",
    "ConversationAction",
    "ConversationPage",
    "ConversationSummary",
    "ConversationsClient",
    "CreateMicroagent",
    "CreatedConversation",
    "MalformedResponse",
    "Quota",
    "Settings",
    "StartHop",
    "SuggestedTask",
    "TimelineEntry",
    "WaitTimeout",
    "Workspace",
    "__version__",
    "api_root",
]
