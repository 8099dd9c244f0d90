"""The conversations table's stream: the one place where a change of a conversation acts outside
DynamoDB (ConversationStreamFunction).

For each change, in the order the changes happened (one item's records share a shard):

1. **Start** the run's workflow when a conversation becomes STARTING: created (INSERT, run 1,
   execution `<id>`) or started again (MODIFY STOPPED/ERROR -> STARTING, run n, `<id>-<n>`).
   The item is the outbox: a crash between the API's write and the start cannot lose the start.
2. **Tear down** when it stops being active (STOPPED by the user or by the concurrency policy,
   ERROR), is stopped again while inactive (`teardown_requested_at`), or is deleted (REMOVE):
   stop the run's execution if it was still starting (not for ERROR: that is the workflow's own
   ending), stop its sandbox task (the one on the record, and any task still started by this
   conversation once nothing of it should run), and for a deletion purge its stored context
   (`conversations/<id>/`, every version) and its channel: transcript, inbox and workspace
   (the channel table's items and `conversation-events/<id>/`).
3. **Publish** `ConversationStatusChanged` on the stack's bus when the status, the runtime
   status or the run changed, and `AgentStatusChanged` when the agent's execution status did
   (docs/events.md).

Every step is idempotent, so a redelivered record (at least once) does no harm; an event may be
published twice, with the same `change_id`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC

from conversation_service.dal import conversations as conversation_items
from conversation_service.dal.events import OutgoingEvent
from conversation_service.logic.clock import now_iso
from conversation_service.logic.runs import execution_name
from conversation_service.logic.workflow import CreationWorkflow
from conversation_service.models.aws_events import ConversationStreamRecord
from conversation_service.models.domain import ACTIVE_STATUSES, Conversation, ConversationStatus
from conversation_service.models.errors import EventBusMissing
from conversation_service.models.events import (
    AGENT_STATUS_CHANGED,
    DELETED,
    EVENT_SOURCE,
    STATUS_CHANGED,
    AgentStatusChanged,
    ConversationStatusChanged,
)
from conversation_service.observability import logger
from conversation_service.ports import (
    ChannelStore,
    ContextStore,
    ConversationStore,
    EventPublisher,
    SandboxFleet,
    WorkflowEngine,
)


@dataclass(frozen=True)
class StreamChange:
    event_name: str  # INSERT, MODIFY or REMOVE
    change_id: str  # the stream record's eventID
    old: Conversation | None
    new: Conversation | None
    at: str | None = None  # when DynamoDB recorded the change (ISO 8601)

    @classmethod
    def from_record(cls, record: ConversationStreamRecord) -> StreamChange:
        """From one parsed stream record (its images in attribute-value form)."""
        change = record.dynamodb
        moment = change.ApproximateCreationDateTime
        at = moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z") if moment else None
        return cls(
            event_name=record.eventName,
            change_id=record.eventID or change.SequenceNumber,
            old=conversation_items.ConversationStore.conversation_from_item(change.OldImage)
            if change.OldImage
            else None,
            new=conversation_items.ConversationStore.conversation_from_item(change.NewImage)
            if change.NewImage
            else None,
            at=at,
        )

    @property
    def conversation(self) -> Conversation | None:
        return self.new or self.old


class ConversationStreamConsumer:
    def __init__(
        self,
        conversations: ConversationStore,
        workflow: CreationWorkflow,
        engine: WorkflowEngine,
        fleet: SandboxFleet,
        context: ContextStore,
        publisher: EventPublisher,
        channel: ChannelStore,
    ) -> None:
        self._conversations = conversations
        self._workflow = workflow
        self._engine = engine
        self._fleet = fleet
        self._context = context
        self._publisher = publisher
        self._channel = channel

    def handle(self, change: StreamChange) -> None:
        conversation = change.conversation
        if conversation is None:
            return
        logger.append_keys(conversation_id=conversation.conversation_id)
        self._start_run(change)
        self._tear_down(change)
        self._publish(change)

    # -- 1. start ----------------------------------------------------------------------------
    def _start_run(self, change: StreamChange) -> None:
        new, old = change.new, change.old
        if new is None or new.conversation_status != ConversationStatus.STARTING:
            return
        if old is not None and old.conversation_status == ConversationStatus.STARTING and old.run == new.run:
            return  # a phase of a run already started
        current = self._conversations.get(new.conversation_id, consistent=True)
        if current is None or current.conversation_status != ConversationStatus.STARTING or current.run != new.run:
            # Stopped, deleted or started again before its workflow began: the record that
            # says so follows this one, and starting nothing is what it wants.
            logger.info("run no longer starting: not started", extra={"run": new.run})
            return
        self._workflow.start_for(new.conversation_id, new.user_id, new.run)

    # -- 2. tear down ------------------------------------------------------------------------------
    def _tear_down(self, change: StreamChange) -> None:
        new, old = change.new, change.old
        if change.event_name == "REMOVE" and old is not None:
            starting = old.conversation_status == ConversationStatus.STARTING
            self._stop(old, stop_execution=starting, deleted=True, why="conversation deleted")
            return
        if change.event_name != "MODIFY" or new is None or old is None:
            return
        if new.conversation_status in ACTIVE_STATUSES:
            return
        closing = old.conversation_status in ACTIVE_STATUSES
        asked_again = bool(new.teardown_requested_at) and new.teardown_requested_at != old.teardown_requested_at
        if not (closing or asked_again):
            return
        # Only a run closed while STARTING can still have its workflow running; an ERROR was
        # written by the run's own workflow (RecordFailure), which is ending by itself.
        stop_execution = asked_again or (
            old.conversation_status == ConversationStatus.STARTING
            and new.conversation_status != ConversationStatus.ERROR
        )
        self._stop(
            new,
            stop_execution=stop_execution,
            deleted=False,
            why=f"conversation {new.conversation_status.value.lower()}",
        )

    def _stop(self, image: Conversation, *, stop_execution: bool, deleted: bool, why: str) -> None:
        conversation_id = image.conversation_id
        if stop_execution:
            self._engine.stop(execution_name(conversation_id, image.run), why)
        tasks = {image.task_arn} if image.task_arn else set()
        current = None if deleted else self._conversations.get(conversation_id, consistent=True)
        if current is None or current.conversation_status not in ACTIVE_STATUSES:
            # Nothing of this conversation should run now, so every task it started goes. (While
            # a later run is active, only this run's own task: the later run owns the others.)
            tasks.update(self._fleet.running_tasks(conversation_id))
        for task_arn in sorted(tasks):
            self._fleet.stop(task_arn, why)
        purged = 0
        if deleted:
            purged = self._context.purge_prefix(f"conversations/{conversation_id}/")
            purged += self._channel.purge(conversation_id)
        logger.info(
            "conversation torn down",
            extra={"run": image.run, "tasks_stopped": len(tasks), "objects_purged": purged, "why": why},
        )

    # -- 3. publish ----------------------------------------------------------------------------
    def _publish(self, change: StreamChange) -> None:
        details: list[tuple[str, ConversationStatusChanged | AgentStatusChanged | None]] = [
            (STATUS_CHANGED, status_change(change)),
            (AGENT_STATUS_CHANGED, agent_status_change(change)),
        ]
        events = [
            OutgoingEvent(
                source=EVENT_SOURCE,
                detail_type=detail_type,
                detail=detail.model_dump(mode="json"),
                time=detail.changed_at,
            )
            for detail_type, detail in details
            if detail is not None
        ]
        if not events:
            return
        try:
            self._publisher.publish(events)
        except EventBusMissing:
            # Not transient: retrying would only hold back the teardown of later changes.
            logger.error("event bus missing: status change not published", extra={"events": len(events)})


def agent_status_change(change: StreamChange) -> AgentStatusChanged | None:
    """The event a change makes if the agent's execution status changed (a status reported
    again unchanged makes none)."""
    old, new = change.old, change.new
    if new is None or not new.agent_status:
        return None
    if old is not None and old.agent_status == new.agent_status and old.run == new.run:
        return None
    return AgentStatusChanged(
        change_id=change.change_id,
        conversation_id=new.conversation_id,
        user_id=new.user_id,
        run=new.run,
        old_agent_status=old.agent_status if old and old.run == new.run else None,
        agent_status=new.agent_status,
        conversation_status=new.conversation_status.value,
        changed_at=new.agent_status_at or change.at or now_iso(),
    )


def status_change(change: StreamChange) -> ConversationStatusChanged | None:
    """The event a change makes, if it changed the status, the runtime status or the run."""
    old, new = change.old, change.new
    if change.event_name == "REMOVE":
        if old is None:
            return None
        return _detail(change, old, old_status=old.conversation_status.value, new_status=DELETED, current=None)
    if new is None:
        return None
    if old is not None and (old.conversation_status, old.runtime_status, old.run) == (
        new.conversation_status,
        new.runtime_status,
        new.run,
    ):
        return None
    return _detail(
        change,
        old,
        old_status=old.conversation_status.value if old else None,
        new_status=new.conversation_status.value,
        current=new,
    )


def _detail(
    change: StreamChange,
    old: Conversation | None,
    *,
    old_status: str | None,
    new_status: str,
    current: Conversation | None,
) -> ConversationStatusChanged:
    subject = current or old
    assert subject is not None
    return ConversationStatusChanged(
        change_id=change.change_id,
        conversation_id=subject.conversation_id,
        user_id=subject.user_id,
        run=subject.run,
        old_status=old_status,
        new_status=new_status,
        old_runtime_status=old.runtime_status if old else None,
        runtime_status=current.runtime_status if current else None,
        error_code=current.error_code if current else None,
        status_reason=current.status_reason if current else None,
        trigger=subject.trigger,
        repository=subject.repository,
        changed_at=(current.updated_at if current else None) or change.at or now_iso(),
    )
