"""The base of every model of the service.

`defer_build`: pydantic builds a model's validator and serializer when the model is first used,
not when its module is imported. A function imports many more models than it uses (every
function's environment model, the API's bodies...), and building them all was a large share of
each cold start (docs/performance.md); tests/unit/test_imports_per_function.py checks every
model of `conversation_service.models` derives from this one.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class ServiceModel(BaseModel):
    model_config = ConfigDict(defer_build=True)


class StrictModel(ServiceModel):
    """A request body: an unknown field is an error, not ignored."""

    model_config = ConfigDict(extra="forbid")
