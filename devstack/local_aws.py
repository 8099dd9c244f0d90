"""AWS: moto, in this process (so our Lambda patch applies), reached two ways.

- **Over HTTP on loopback** (moto in server mode): whatever runs outside this process, the
  sandboxes' KMS calls with their task credentials, tests, the CLI and `aws --endpoint-url`.
- **In-process, for this process's own boto3 clients** (the handlers', the pump's, the Fargate
  stand-in's, moto's Step Functions engine's): botocore builds the real AWS request and moto's
  botocore stubber (the one `mock_aws` uses) answers it from the same backends, without the
  loopback HTTP round trip. Measured here: a DynamoDB GetItem costs 1.4 ms of CPU this way against
  5.0-5.7 ms through the server (botocore's and urllib3's HTTP, werkzeug's server, a thread per
  request), and a start makes about 150 calls in this one process. Nothing here reaches real AWS:
  moto answers an AWS URL it does not know with a 404, and one on another AWS domain is refused
  (`NoRealAws`). A client given an explicit `endpoint_url` (the loopback server) goes over HTTP.

Both ways take the same lock, so moto serves one AWS call at a time (`serialize_requests`).
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from moto.server import ThreadedMotoServer
from werkzeug.serving import make_server

from devstack import moto_speedups
from devstack.template_resources import ACCOUNT_ID, REGION

MOTO_CONFIG: dict[str, Any] = {"stepfunctions": {"execute_state_machine": True}, "lambda": {"use_docker": False}}
FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
}
# Lambda invocations run a handler that calls moto again: they must not hold the request lock.
_LAMBDA_INVOKE_PATH = re.compile(r"^/2015-03-31/functions/[^/]+/invocations")
# Longest wait for the request lock before going ahead without it (a safety net: no request
# should ever hold it this long, and a stuck stack is worse than a rare unserialised request).
_LOCK_PATIENCE_SECONDS = 30.0

_log = logging.getLogger("devstack.aws")

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def use_fake_credentials() -> None:
    """No real AWS account can be reached from this process, whatever the shell holds."""
    for name in (
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_ROLE_ARN",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    ):
        os.environ.pop(name, None)
    os.environ.update(FAKE_CREDENTIALS)
    os.environ["AWS_CONFIG_FILE"] = os.devnull
    os.environ["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull
    os.environ["AWS_EC2_METADATA_DISABLED"] = "true"


class _QuietMotoRequestHandler(MotoRequestHandler):
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


_MOTO_LOCK = threading.Lock()
"""Held by every AWS call moto serves, over HTTP or in-process (Lambda invocations excepted)."""


@contextmanager
def _one_call_at_a_time(path: str) -> Iterator[None]:
    acquired = _MOTO_LOCK.acquire(timeout=_LOCK_PATIENCE_SECONDS)
    if not acquired:
        _log.warning("moto request lock busy for %ss; serving %s unserialised", _LOCK_PATIENCE_SECONDS, path)
    try:
        yield
    finally:
        if acquired:
            _MOTO_LOCK.release()


def serialize_requests(app: WsgiApp) -> WsgiApp:
    """One AWS call at a time, as each DynamoDB call is atomic in AWS.

    moto's backends take no lock: concurrent requests corrupt each other's TransactWriteItems
    (see tests/support/serial_moto.py). Lambda invocations are left out: the handler they run
    makes AWS calls of its own.
    """

    def serialized(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if _LAMBDA_INVOKE_PATH.match(environ.get("PATH_INFO", "")):
            return app(environ, start_response)
        with _one_call_at_a_time(environ.get("PATH_INFO", "")):
            # Drain the body while holding the lock: werkzeug responses may be lazy iterables.
            body = app(environ, start_response)
            try:
                return [b"".join(body)]
            finally:
                close = getattr(body, "close", None)
                if close is not None:
                    close()

    return serialized


class NoRealAws(RuntimeError):
    """A boto3 call of the local stack that moto's stubber did not answer: it would have gone to AWS."""


def answer_this_process_in_process() -> None:
    """This process's boto3 calls answered by moto's botocore stubber, under the moto lock; a
    call for an AWS endpoint it does not answer is refused before it leaves the process."""
    from moto.core.models import botocore_stubber

    if not getattr(botocore_stubber, "_local_stack_serialized", False):
        answer = botocore_stubber.process_request

        def serialized(request: Any) -> Any:
            url = urllib.parse.urlsplit(request.url)
            if _LAMBDA_INVOKE_PATH.match(url.path):
                response = answer(request)
            else:
                with _one_call_at_a_time(url.path):
                    response = answer(request)
            host = url.hostname or ""
            if response is None and (host.endswith(".amazonaws.com") or host.endswith(".api.aws")):
                raise NoRealAws(f"moto does not answer {request.method} {request.url}: no real AWS from here")
            return response  # None for an explicit endpoint_url (the loopback server): over HTTP

        botocore_stubber.process_request = serialized  # type: ignore[method-assign]
        botocore_stubber._local_stack_serialized = True  # type: ignore[attr-defined]
    botocore_stubber.enabled = True


class LocalMotoServer(ThreadedMotoServer):
    """`ThreadedMotoServer` with requests serialised (except Lambda invokes) and no request log."""

    def _server_entry(self) -> None:
        app = serialize_requests(DomainDispatcherApplication(create_backend_app))
        self._server = make_server(
            self._ip_address, self._port, app, threaded=True, request_handler=_QuietMotoRequestHandler
        )
        self._server_ready_event.set()
        self._server.serve_forever()


class LocalAws:
    """moto on 127.0.0.1, configured to execute state machines and run Lambda without Docker."""

    def __init__(self, port: int = 0) -> None:
        self._server = LocalMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        self.endpoint_url = ""

    def start(self) -> str:
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        use_fake_credentials()
        moto_speedups.apply()
        self._server.start()
        port = self._server.get_host_and_port()[1]
        self.endpoint_url = f"http://127.0.0.1:{port}"
        os.environ.pop("AWS_ENDPOINT_URL", None)  # this process's clients: in-process (above)
        answer_this_process_in_process()
        # moto's Step Functions engine calls Lambda at http://localhost:$MOTO_PORT.
        os.environ["MOTO_PORT"] = str(port)
        self._configure(MOTO_CONFIG)
        return self.endpoint_url

    def _configure(self, config: dict[str, Any]) -> None:
        request = urllib.request.Request(  # noqa: S310 - our own loopback http URL
            f"{self.endpoint_url}/moto-api/config",
            data=json.dumps(config).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            response.read()

    def forget_stream_iterators(self) -> None:
        """Drop moto's DynamoDB stream iterators: it keeps every one it ever issued (about 2 kB
        each), and the stream pump asks for a fresh one on every poll. Called between polls by
        the stream pumps (they take turns), the only readers of the streams: none is in use then."""
        from moto.dynamodbstreams.models import dynamodbstreams_backends

        dynamodbstreams_backends[ACCOUNT_ID][REGION].shard_iterators.clear()

    def stop(self) -> None:
        if self.endpoint_url:
            self._server.stop()
