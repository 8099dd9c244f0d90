"""The pool table (template: SandboxPoolTable): one item per pool sandbox.

Every state change is a conditional write on the item's `pool_status`, so a sandbox is claimed
by one conversation at most, and the reconciler can retire only what is still unclaimed. The
sparse index ByLiveState holds the LAUNCHING and IDLE items only (`live_state` is removed on
any other state), oldest first.
"""

from __future__ import annotations

import time
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from conversation_service.dal.aws import client, from_item, to_attribute, to_item, write_if, written_if
from conversation_service.models.pool import PoolSandbox, PoolState
from conversation_service.observability import logger

LIVE_STATE_INDEX = "ByLiveState"
ENDED_RETENTION_SECONDS = 86400
"""How long an ended item (claimed, retired, dead) stays readable before its TTL removes it."""


class PoolStore:
    def __init__(self, table_name: str) -> None:
        self.table_name = table_name

    # -- reads ---------------------------------------------------------------------------------
    def get(self, sandbox_id: str, *, consistent: bool = True) -> PoolSandbox | None:
        response = client("dynamodb").get_item(
            TableName=self.table_name, Key={"sandbox_id": {"S": sandbox_id}}, ConsistentRead=consistent
        )
        return _sandbox(response["Item"]) if "Item" in response else None

    def live(self, state: PoolState, *, limit: int = 1000) -> list[PoolSandbox]:
        """LAUNCHING or IDLE sandboxes, oldest first (the index is eventually consistent: every
        write that acts on one is conditional on the item itself)."""
        request: dict[str, Any] = {
            "TableName": self.table_name,
            "IndexName": LIVE_STATE_INDEX,
            "KeyConditionExpression": "live_state = :state",
            "ExpressionAttributeValues": {":state": {"S": state.value}},
        }
        found: list[PoolSandbox] = []
        while len(found) < limit:
            response = client("dynamodb").query(**request)
            found += [_sandbox(item) for item in response.get("Items", [])]
            if "LastEvaluatedKey" not in response:
                break
            request["ExclusiveStartKey"] = response["LastEvaluatedKey"]
        return found[:limit]

    def wait_for_change(self, sandbox_id: str, seconds: float) -> None:
        """Return when ``sandbox_id``'s item may have changed, after ``seconds`` at most. DynamoDB
        tells no reader of a write: the long poll reads again after ``seconds``. (The local stack
        returns as soon as moto writes to the pool table: devstack.pool_wakes.)"""
        time.sleep(seconds)

    # -- writes --------------------------------------------------------------------------------
    def put_launching(self, sandbox: PoolSandbox) -> None:
        item = to_item(sandbox.model_dump(mode="json"))
        item["live_state"] = {"S": PoolState.LAUNCHING.value}
        client("dynamodb").put_item(
            TableName=self.table_name, Item=item, ConditionExpression="attribute_not_exists(sandbox_id)"
        )

    def set_task(self, sandbox_id: str, task_arn: str) -> bool:
        return self._update(
            sandbox_id,
            "SET task_arn = :task",
            {":task": to_attribute(task_arn)},
            condition="attribute_exists(sandbox_id)",
        )

    def mark_idle(self, sandbox_id: str, now_ms: int) -> bool:
        """LAUNCHING -> IDLE (again IDLE: only the heartbeat moves)."""
        return self._update(
            sandbox_id,
            "SET pool_status = :idle, live_state = :idle, idle_since = if_not_exists(idle_since, :now), "
            "heartbeat_at = :now",
            {":idle": {"S": PoolState.IDLE.value}, ":now": {"N": str(now_ms)}, **_states(PoolState.LAUNCHING)},
            condition="pool_status IN (:launching, :idle)",
        )

    def heartbeat(self, sandbox_id: str, now_ms: int) -> bool:
        return self._update(
            sandbox_id,
            "SET heartbeat_at = :now",
            {":now": {"N": str(now_ms)}, ":idle": {"S": PoolState.IDLE.value}},
            condition="pool_status = :idle",
        )

    def claim(
        self,
        sandbox_id: str,
        *,
        conversation_id: str,
        assignment: dict[str, str],
        now_ms: int,
        heartbeat_after_ms: int,
        task_definition_arn: str,
    ) -> PoolSandbox | None:
        """IDLE (heartbeating, on the current task definition) -> CLAIMED by this conversation.
        The condition is the whole guarantee: of any number of racing claims one wins."""
        response = written_if(
            "update_item",
            TableName=self.table_name,
            Key={"sandbox_id": {"S": sandbox_id}},
            UpdateExpression="SET pool_status = :claimed, conversation_id = :conversation, "
            "assignment = :assignment, claimed_at = :now, expires_at = :expires REMOVE live_state",
            ConditionExpression="pool_status = :idle AND heartbeat_at >= :fresh "
            "AND task_definition_arn = :definition AND attribute_exists(task_arn)",
            ExpressionAttributeValues={
                ":claimed": {"S": PoolState.CLAIMED.value},
                ":idle": {"S": PoolState.IDLE.value},
                ":conversation": {"S": conversation_id},
                ":assignment": to_attribute(assignment),
                ":now": {"N": str(now_ms)},
                ":fresh": {"N": str(heartbeat_after_ms)},
                ":definition": {"S": task_definition_arn},
                ":expires": {"N": str(now_ms // 1000 + ENDED_RETENTION_SECONDS)},
            },
            ReturnValues="ALL_NEW",
        )
        return _sandbox(response["Attributes"]) if response is not None else None

    def take_assignment(self, sandbox_id: str, now_ms: int) -> dict[str, str] | None:
        """The assignment, once: it is removed from the item in the same conditional write."""
        response = written_if(
            "update_item",
            TableName=self.table_name,
            Key={"sandbox_id": {"S": sandbox_id}},
            UpdateExpression="SET assignment_delivered_at = :now REMOVE assignment",
            ConditionExpression="pool_status = :claimed AND attribute_exists(assignment)",
            ExpressionAttributeValues={":claimed": {"S": PoolState.CLAIMED.value}, ":now": {"N": str(now_ms)}},
            ReturnValues="ALL_OLD",
        )
        if response is None:
            return None
        assignment = from_item(response["Attributes"]).get("assignment")
        return {str(key): str(value) for key, value in assignment.items()} if isinstance(assignment, dict) else None

    def end(self, sandbox_id: str, state: PoolState, reason: str, now_ms: int) -> bool:
        """A live (LAUNCHING or IDLE) sandbox -> RETIRED or DEAD. Never touches a claimed one."""
        assert not state.is_live and state is not PoolState.CLAIMED
        return self._update(
            sandbox_id,
            "SET pool_status = :ended, ended_reason = :reason, expires_at = :expires REMOVE live_state",
            {
                ":ended": {"S": state.value},
                ":reason": {"S": reason[:500]},
                ":expires": {"N": str(now_ms // 1000 + ENDED_RETENTION_SECONDS)},
                **_states(PoolState.LAUNCHING, PoolState.IDLE),
            },
            condition="pool_status IN (:launching, :idle)",
        )

    def _update(self, sandbox_id: str, expression: str, values: dict[str, Any], *, condition: str) -> bool:
        return write_if(
            "update_item",
            TableName=self.table_name,
            Key={"sandbox_id": {"S": sandbox_id}},
            UpdateExpression=expression,
            ConditionExpression=condition,
            ExpressionAttributeValues=values,
        )


def _states(*states: PoolState) -> dict[str, Any]:
    return {f":{state.value.lower()}": {"S": state.value} for state in states}


def _sandbox(item: dict[str, Any]) -> PoolSandbox:
    values = from_item(item)
    values.pop("live_state", None)
    values.pop("expires_at", None)
    return PoolSandbox.model_validate(values)


class ReconcilerNudge:
    """Invokes the pool reconciler asynchronously (Lambda `Event` invocation): best effort, the
    schedule catches up on whatever a lost nudge missed."""

    def __init__(self, function_name: str) -> None:
        self._function_name = function_name

    def nudge(self) -> None:
        if not self._function_name:
            return
        try:
            client("lambda").invoke(FunctionName=self._function_name, InvocationType="Event", Payload=b"{}")
        except (ClientError, BotoCoreError) as error:
            logger.warning("could not nudge the pool reconciler", extra={"problem": str(error)})
