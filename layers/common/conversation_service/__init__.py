"""Shared code for the conversation service: models, business rules and data access.

Shipped to every function as the `CommonLayer` Lambda layer.

- `models/`   pydantic request, response and domain models; the service's errors
- `logic/`    business rules (no boto3 here)
- `dal/`      the only code that talks to AWS (boto3)
- `adapters/` other outside systems: git remotes over the git protocol (dulwich)
"""
