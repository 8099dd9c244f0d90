"""AWS on loopback: moto in server mode, in this process, so our Lambda patch applies.

Every boto3 client of this process (the handlers', the pump's, the Fargate stand-in's) reaches
moto through `AWS_ENDPOINT_URL` with fake credentials; moto's Step Functions engine reaches
moto's Lambda at `http://localhost:$MOTO_PORT`, which runs our real handlers.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import urllib.request
from collections.abc import Callable, Iterable
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


def serialize_requests(app: WsgiApp) -> WsgiApp:
    """One AWS call at a time, as each DynamoDB call is atomic in AWS.

    moto's backends take no lock: concurrent requests corrupt each other's TransactWriteItems
    (see tests/support/serial_moto.py). Lambda invocations are left out: the handler they run
    makes AWS calls of its own.
    """
    lock = threading.Lock()

    def serialized(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if _LAMBDA_INVOKE_PATH.match(environ.get("PATH_INFO", "")):
            return app(environ, start_response)
        acquired = lock.acquire(timeout=_LOCK_PATIENCE_SECONDS)
        if not acquired:
            _log.warning(
                "moto request lock busy for %ss; serving %s unserialised",
                _LOCK_PATIENCE_SECONDS,
                environ.get("PATH_INFO"),
            )
        try:
            # Drain the body while holding the lock: werkzeug responses may be lazy iterables.
            body = app(environ, start_response)
            try:
                return [b"".join(body)]
            finally:
                close = getattr(body, "close", None)
                if close is not None:
                    close()
        finally:
            if acquired:
                lock.release()

    return serialized


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
        os.environ["AWS_ENDPOINT_URL"] = self.endpoint_url
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
