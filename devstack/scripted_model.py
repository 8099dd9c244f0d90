"""A small OpenAI-compatible server that answers chat completions with scripted tool calls.

It stands in for the LLM provider only: the agent-server, its tools and the workspace stay real.
The answer to a request depends only on the request, so one server serves any number of
conversations at once:

- the *turn* is the number of assistant messages after the conversation's latest user message;
- the *script* is the first rule whose ``when`` text occurs in that user message (else the
  default script); its step number ``turn`` is the answer, and past its end the agent finishes.

A step is ``{"tool": "<name>", "arguments": {...}}`` (a tool call: ``terminal``, ``finish``,
``file_editor``...) or ``{"text": "..."}`` (a plain assistant message). A request without tools
(the agent-server's title generation) gets a short text. Every request is recorded.

Run it alone for ``make dev``::

    .venv/bin/python -m devstack.scripted_model --port 4010 [--script script.json]
    LLM_MODEL=openai/scripted LLM_API_KEY=any LLM_BASE_URL=http://127.0.0.1:4010/v1 make dev

``script.json`` holds ``{"rules": [{"when": "...", "steps": [...]}], "default": [...]}``.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from devstack.serving import first_match, served_in_thread

Step = dict[str, Any]
MAX_BODY_BYTES = 64 * 1024 * 1024
DEFAULT_FINISH = "Done."


def tool(name: str, **arguments: Any) -> Step:
    return {"tool": name, "arguments": arguments}


def terminal(command: str, *, summary: str = "run a command") -> Step:
    """A ``terminal`` tool call the agent-server runs in the workspace (rated low risk)."""
    return tool("terminal", command=command, is_input=False, summary=summary, security_risk="LOW")


def finish(message: str = DEFAULT_FINISH) -> Step:
    return tool("finish", message=message)


def text(content: str) -> Step:
    return {"text": content}


@dataclass(frozen=True)
class Rule:
    when: str
    steps: tuple[Step, ...]


@dataclass
class Script:
    rules: list[Rule] = field(default_factory=list)
    default: tuple[Step, ...] = (finish(),)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Script:
        rules = [Rule(str(rule["when"]), tuple(rule["steps"])) for rule in data.get("rules", [])]
        default = tuple(data.get("default") or (finish(),))
        return cls(rules, default)

    def steps_for(self, user_text: str) -> tuple[Step, ...]:
        for rule in self.rules:
            if rule.when in user_text:
                return rule.steps
        return self.default


@dataclass(frozen=True)
class ReceivedRequest:
    at: float
    body: dict[str, Any]

    @property
    def messages(self) -> list[dict[str, Any]]:
        return list(self.body.get("messages") or [])

    @property
    def user_texts(self) -> list[str]:
        return [message_text(message) for message in self.messages if message.get("role") == "user"]

    @property
    def last_user_text(self) -> str:
        texts = self.user_texts
        return texts[-1] if texts else ""


def message_text(message: Mapping[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


def choose_step(script: Script, body: Mapping[str, Any]) -> Step:
    messages = list(body.get("messages") or [])
    if not body.get("tools"):
        return text("Scripted conversation")
    last_user = max((index for index, message in enumerate(messages) if message.get("role") == "user"), default=-1)
    user_text = message_text(messages[last_user]) if last_user >= 0 else ""
    turn = sum(1 for message in messages[last_user + 1 :] if message.get("role") == "assistant")
    steps = script.steps_for(user_text)
    return steps[turn] if turn < len(steps) else finish()


def completion(step: Step, model: str) -> dict[str, Any]:
    """A non-streaming ``chat.completion`` holding ``step``."""
    if "tool" in step:
        message: dict[str, Any] = {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": f"call_{uuid.uuid4().hex[:24]}",
                    "type": "function",
                    "function": {"name": step["tool"], "arguments": json.dumps(step.get("arguments") or {})},
                }
            ],
        }
        reason = "tool_calls"
    else:
        message = {"role": "assistant", "content": str(step.get("text", ""))}
        reason = "stop"
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": reason}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
    }


class _Handler(BaseHTTPRequestHandler):
    server: ScriptedModelServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        if self.path.rstrip("/").endswith("/models"):
            self._answer(200, {"object": "list", "data": [{"id": "scripted", "object": "model"}]})
        else:
            self._answer(404, {"error": {"message": "not found"}})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            self._answer(413, {"error": {"message": "request too large"}})
            return
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except json.JSONDecodeError:
            self._answer(400, {"error": {"message": "not JSON"}})
            return
        if not self.path.rstrip("/").endswith("/chat/completions") or not isinstance(body, dict):
            self._answer(404, {"error": {"message": "only chat completions are scripted"}})
            return
        step = self.server.answer(body)
        self._answer(200, completion(step, str(body.get("model") or "scripted")))

    def _answer(self, status: int, body: Any) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


class ScriptedModelServer(ThreadingHTTPServer):
    """The server; ``requests`` holds what it received, oldest first."""

    daemon_threads = True

    def __init__(self, script: Script | None = None, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__((host, port), _Handler)
        self.script = script or Script()
        self.requests: list[ReceivedRequest] = []
        self._changed = threading.Condition()

    @property
    def base_url(self) -> str:
        """The ``base_url`` to give the agent (``.../v1``)."""
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def answer(self, body: dict[str, Any]) -> Step:
        with self._changed:
            self.requests.append(ReceivedRequest(time.time(), body))
            self._changed.notify_all()
            script = self.script
        return choose_step(script, body)

    def add_rule(self, when: str, steps: Sequence[Step]) -> None:
        """Answer conversations whose latest user message holds ``when`` with ``steps`` (first match wins)."""
        with self._changed:
            self.script.rules.append(Rule(when, tuple(steps)))

    def received(self) -> list[ReceivedRequest]:
        with self._changed:
            return list(self.requests)

    def wait_for_request(self, predicate: Callable[[ReceivedRequest], bool], timeout: float) -> ReceivedRequest:
        return first_match(
            self._changed,
            self.requests,
            predicate,
            timeout,
            lambda: f"no matching request among {len(self.requests)} received",
        )


@contextmanager
def scripted_model(script: Script | None = None) -> Iterator[ScriptedModelServer]:
    with served_in_thread(ScriptedModelServer(script), name="scripted-model") as server:
        yield server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack.scripted_model", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=4010, help="port on 127.0.0.1 (default 4010)")
    parser.add_argument("--script", type=Path, help="a JSON script (default: every conversation just finishes)")
    arguments = parser.parse_args(argv)
    script = Script.from_json(json.loads(arguments.script.read_text())) if arguments.script else Script()
    server = ScriptedModelServer(script, port=arguments.port)
    print(f"scripted model: LLM_MODEL=openai/scripted LLM_BASE_URL={server.base_url}", flush=True)
    try:
        server.serve_forever(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
