"""The first message the agent receives: the user's, a suggested task's prompt, or a replay's."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from conversation_service.models.context import FirstMessage

if TYPE_CHECKING:
    from conversation_service.models.api import CreateMicroagent, SuggestedTask

# Keyed by SuggestedTaskType's values (a StrEnum: its members look these up): the workflow step
# that builds the first message does not import the API's models unless a request needs them.
_TASK_PROMPTS = {
    "MERGE_CONFLICTS": (
        "You are working on pull request #{number} in repository {repo} ({title}). "
        "It has merge conflicts: check out its branch, merge the base branch into it, resolve every "
        "conflict keeping the intent of both sides, make sure the tests pass, and push the result."
    ),
    "FAILING_CHECKS": (
        "You are working on pull request #{number} in repository {repo} ({title}). "
        "Its CI checks are failing: check out its branch, find out why each failing check fails, "
        "fix the cause, run the checks locally where you can, and push the fix."
    ),
    "UNRESOLVED_COMMENTS": (
        "You are working on pull request #{number} in repository {repo} ({title}). "
        "It has unresolved review comments: check out its branch, address each comment in the code, "
        "and push the changes."
    ),
    "OPEN_ISSUE": (
        "You are working on issue #{number} in repository {repo}: {title}. "
        "Read the issue, reproduce the problem if it is a bug, implement a fix or the feature with tests, "
        "and open a pull request that references the issue."
    ),
    "OPEN_PR": (
        "You are working on pull request #{number} in repository {repo} ({title}). "
        "Review it, finish what is missing, and make sure its checks pass."
    ),
    "CREATE_MICROAGENT": (
        "Create a microagent for repository {repo} ({title}): add a markdown file under "
        ".openhands/microagents/ describing the repository, how to build and test it, and its conventions."
    ),
}


def suggested_task_prompt(task: SuggestedTask) -> str:
    return _TASK_PROMPTS[task.task_type].format(number=task.issue_number, repo=task.repo, title=task.title)


def create_microagent_prompt(request: CreateMicroagent) -> str:
    title = f" ({request.title})" if request.title else ""
    return (
        f"Create a microagent for repository {request.repo}{title}: add a markdown file under "
        ".openhands/microagents/ that tells an agent how this repository is built, tested and organised."
    )


def first_user_message_in_replay(replay_json: str) -> str | None:
    """The first user message of an OpenHands trajectory (a JSON list of events)."""
    try:
        events: Any = json.loads(replay_json)
    except (json.JSONDecodeError, RecursionError):  # refused at creation; older requests may hold one
        return None
    if isinstance(events, dict):
        events = events.get("events") or events.get("trajectory") or []
    for event in events if isinstance(events, list) else []:
        if not isinstance(event, dict) or event.get("source") != "user":
            continue
        if event.get("action") == "message":
            content = (event.get("args") or {}).get("content") or event.get("message")
            if isinstance(content, str) and content.strip():
                return content
    return None


def first_message(request: dict[str, Any]) -> FirstMessage | None:
    images = list(request.get("image_urls") or [])
    if text := request.get("initial_user_msg"):
        return FirstMessage(text=text, image_urls=images)
    if task := request.get("suggested_task"):
        from conversation_service.models.api import SuggestedTask

        return FirstMessage(text=suggested_task_prompt(SuggestedTask.model_validate(task)), image_urls=images)
    if microagent := request.get("create_microagent"):
        from conversation_service.models.api import CreateMicroagent

        return FirstMessage(
            text=create_microagent_prompt(CreateMicroagent.model_validate(microagent)), image_urls=images
        )
    if (replay := request.get("replay_json")) and (text := first_user_message_in_replay(replay)):
        return FirstMessage(text=text, image_urls=images)
    if images:
        return FirstMessage(text="", image_urls=images)
    return None
