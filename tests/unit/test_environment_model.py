"""Each function's required environment (models/environment.py): the message names every missing or
malformed variable, never its value (the template against the models: tests/emulated)."""

from __future__ import annotations

import pytest
from conversation_service.config import require_environment
from conversation_service.models.environment import LaunchSandboxEnvironment
from conversation_service.models.errors import InvalidEnvironment


def test_the_message_names_every_missing_or_malformed_variable_without_its_value() -> None:
    with pytest.raises(InvalidEnvironment) as missing:
        require_environment(LaunchSandboxEnvironment, {"CONVERSATIONS_TABLE": "c", "USERS_TABLE": " "})
    assert "USERS_TABLE" in str(missing.value) and "SANDBOX_TASK_DEFINITION_ARN" in str(missing.value)
    assert "CONVERSATIONS_TABLE" not in str(missing.value)
    complete = {name: "x" for name in LaunchSandboxEnvironment.model_fields}
    with pytest.raises(InvalidEnvironment, match="SANDBOX_CLUSTER_ARN") as malformed:
        require_environment(LaunchSandboxEnvironment, {**complete, "SANDBOX_CLUSTER_ARN": "my-cluster-secretish"})
    assert "my-cluster-secretish" not in str(malformed.value)
