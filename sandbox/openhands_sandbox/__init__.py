"""Bootstrap of an OpenHands sandbox: workspace, setup script, git hooks, agent-server.

The program run as ``python -m openhands_sandbox.bootstrap`` prepares the workspace of one
conversation, starts the OpenHands agent-server in it, creates the agent conversation and
reports every step to the control plane through the sandbox callback API
(see ``docs/sandbox-protocol.md``).
"""

__all__ = ["__version__"]

__version__ = "1.0.0"
