"""Users table: settings (secrets sealed with KMS), the active-conversation counter, API keys."""

from __future__ import annotations

from typing import Any

from conversation_service.dal.aws import client, from_item, to_item
from conversation_service.dal.secrets import SecretBox
from conversation_service.models.domain import UserSecrets, UserSettings

SETTINGS_SK = "SETTINGS"
QUOTA_SK = "QUOTA"
API_KEY_SK = "APIKEY"


def user_pk(user_id: str) -> str:
    return f"USER#{user_id}"


def quota_key(user_id: str) -> dict[str, Any]:
    return {"pk": {"S": user_pk(user_id)}, "sk": {"S": QUOTA_SK}}


def settings_key(user_id: str) -> dict[str, Any]:
    return {"pk": {"S": user_pk(user_id)}, "sk": {"S": SETTINGS_SK}}


def settings_from_item(item: dict[str, Any]) -> UserSettings:
    values = from_item(item)
    return UserSettings.model_validate({key: values[key] for key in UserSettings.model_fields if key in values})


def active_count_from_item(item: dict[str, Any]) -> int:
    return int(from_item(item).get("active_count", 0))


class UserStore:
    def __init__(self, table_name: str, secret_box: SecretBox) -> None:
        self.table_name = table_name
        self._secret_box = secret_box

    def get_settings(self, user_id: str) -> UserSettings | None:
        response = client("dynamodb").get_item(TableName=self.table_name, Key=settings_key(user_id))
        return settings_from_item(response["Item"]) if "Item" in response else None

    def open_secrets(self, settings: UserSettings) -> UserSecrets:
        if not settings.sealed_secrets:
            return UserSecrets()
        return UserSecrets.model_validate(self._secret_box.open(settings.sealed_secrets, owner=settings.user_id))

    def seal_for(self, user_id: str, payload: dict[str, Any], *, conversation_id: str | None = None) -> str:
        """Seal something secret of the user's (an MCP server's key) with the user's encryption
        context, and the conversation's when it belongs to one."""
        return self._secret_box.seal(payload, owner=user_id, conversation_id=conversation_id)

    def open_for(self, user_id: str, sealed: str, *, conversation_id: str | None = None) -> dict[str, Any]:
        return dict(self._secret_box.open(sealed, owner=user_id, conversation_id=conversation_id))

    def save_settings(self, settings: UserSettings, secrets: UserSecrets) -> None:
        settings.llm_api_key_set = bool(secrets.llm_api_key)
        settings.provider_tokens_set = sorted(secrets.provider_tokens)
        settings.sealed_secrets = self._secret_box.seal(secrets.model_dump(), owner=settings.user_id)
        item = to_item({"pk": user_pk(settings.user_id), "sk": SETTINGS_SK, **settings.model_dump(exclude_none=True)})
        client("dynamodb").put_item(TableName=self.table_name, Item=item)

    def active_count(self, user_id: str) -> int:
        response = client("dynamodb").get_item(TableName=self.table_name, Key=quota_key(user_id), ConsistentRead=True)
        return active_count_from_item(response.get("Item", {}))

    def find_user_by_api_key_hash(self, key_hash: str) -> str | None:
        response = client("dynamodb").get_item(
            TableName=self.table_name, Key={"pk": {"S": f"APIKEY#{key_hash}"}, "sk": {"S": API_KEY_SK}}
        )
        item = from_item(response.get("Item", {}))
        user_id = item.get("user_id")
        return str(user_id) if user_id and not item.get("revoked") else None

    def save_api_key_hash(self, key_hash: str, user_id: str, created_at: str) -> None:
        client("dynamodb").put_item(
            TableName=self.table_name,
            Item=to_item({"pk": f"APIKEY#{key_hash}", "sk": API_KEY_SK, "user_id": user_id, "created_at": created_at}),
            ConditionExpression="attribute_not_exists(pk)",
        )
