"""A conversation's progress while it starts and runs: workflow phases, the fields its steps
record, the one-time context delivery, RUNNING, and the agent's own status. Every write here is
conditional on the conversation still being where the writer thinks it is (STARTING, or active),
and on its run, so a step of an older run never touches the current one."""

from __future__ import annotations

from typing import Any

from conversation_service.dal.aws import to_attribute, write_if
from conversation_service.dal.conversation_records import (
    ACTIVE_VALUES,
    IS_ACTIVE,
    ConversationRecords,
    conversation_key,
)
from conversation_service.models.domain import ConversationStatus, RuntimeStatus, TimelineEntry

_IS_STARTING = "conversation_status = :starting"
_STARTING_VALUES = {":starting": {"S": ConversationStatus.STARTING.value}}


class ConversationProgress(ConversationRecords):
    def set_runtime_phase(
        self, conversation_id: str, phase: RuntimeStatus, *, at: str, run: int | None = None, **fields: Any
    ) -> bool:
        """Record a workflow phase on a STARTING conversation (timeline entry + runtime status)."""
        return self._update_if_starting(conversation_id, phase, at, fields, run)

    def update_starting(self, conversation_id: str, *, run: int | None = None, **fields: Any) -> bool:
        """Set fields on a conversation that is still STARTING (on run `run`; False if it is not)."""
        return self._update_if_starting(conversation_id, None, None, fields, run)

    def claim_context_delivery(
        self, conversation_id: str, sealed_session_api_key: str, *, run: int | None = None
    ) -> bool:
        """The sandbox gets its context (with secrets) once: the first claim wins."""
        return self._update_if(
            conversation_id,
            None,
            None,
            {"context_delivered": True, "sealed_session_api_key": sealed_session_api_key},
            condition=f"{_IS_STARTING} AND (attribute_not_exists(context_delivered) OR context_delivered = :false)",
            condition_values={**_STARTING_VALUES, ":false": {"BOOL": False}},
            run=run,
        )

    def mark_running(
        self, conversation_id: str, *, at: str, last_active_at: int, run: int | None = None, **fields: Any
    ) -> bool:
        fields = {**fields, "conversation_status": ConversationStatus.RUNNING.value, "last_active_at": last_active_at}
        return self._update_if_starting(conversation_id, RuntimeStatus.READY, at, fields, run)

    def set_agent_status(self, conversation_id: str, run: int, status: str, *, at: str, answer_stays: bool) -> bool:
        """Record the agent's execution status on an active conversation of run `run` (False when
        it is not). A recorded confirmation answer is forgotten unless `answer_stays`."""
        return write_if(
            "update_item",
            TableName=self.table_name,
            Key=conversation_key(conversation_id),
            UpdateExpression="SET agent_status = :status, agent_status_at = :at"
            + ("" if answer_stays else " REMOVE confirmation_answered_at"),
            ConditionExpression=f"{IS_ACTIVE} AND #run = :run",
            ExpressionAttributeNames={"#run": "run"},
            ExpressionAttributeValues={
                ":status": {"S": status},
                ":at": {"S": at},
                ":run": {"N": str(run)},
                **ACTIVE_VALUES,
            },
        )

    def _update_if_starting(
        self, conversation_id: str, phase: RuntimeStatus | None, at: str | None, fields: dict[str, Any], run: int | None
    ) -> bool:
        """Apply the update only while the conversation is still STARTING (on run `run`)."""
        return self._update_if(
            conversation_id, phase, at, fields, condition=_IS_STARTING, condition_values=_STARTING_VALUES, run=run
        )

    def _update_if(
        self,
        conversation_id: str,
        phase: RuntimeStatus | None,
        at: str | None,
        fields: dict[str, Any],
        *,
        condition: str,
        condition_values: dict[str, Any],
        run: int | None = None,
    ) -> bool:
        values: dict[str, Any] = dict(condition_values)
        names: dict[str, str] = {}
        sets: list[str] = []
        if run is not None:  # a step of an older run must not touch the current one
            condition = f"{condition} AND #run = :run"
            names["#run"] = "run"
            values[":run"] = {"N": str(run)}
        if phase is not None and at is not None:
            values.update(
                {
                    ":phase": to_attribute(phase.value),
                    ":at": to_attribute(at),
                    ":entry": to_attribute([TimelineEntry(phase=phase.value, at=at).model_dump()]),
                    ":empty": {"L": []},
                }
            )
            sets += [
                "runtime_status = :phase",
                "updated_at = :at",
                "timeline = list_append(if_not_exists(timeline, :empty), :entry)",
            ]
        for index, (name, value) in enumerate(fields.items()):
            if value is None:
                continue
            names[f"#f{index}"] = name
            values[f":f{index}"] = to_attribute(value)
            sets.append(f"#f{index} = :f{index}")
        request: dict[str, Any] = {
            "TableName": self.table_name,
            "Key": conversation_key(conversation_id),
            "UpdateExpression": "SET " + ", ".join(sets),
            "ConditionExpression": condition,
            "ExpressionAttributeValues": values,
        }
        if names:
            request["ExpressionAttributeNames"] = names
        return write_if("update_item", **request)
