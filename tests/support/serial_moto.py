"""moto handling one request at a time, in a process of its own: the race tests' AWS
(tests/emulated, tests/reliability, tests/pool).

moto's backends take no lock: concurrent requests corrupt each other's TransactWriteItems. One
request at a time makes each AWS call atomic, as DynamoDB's are, while concurrent clients still
interleave their calls in any order. Run as a script it prints its port, then serves until killed.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def serial_moto() -> Iterator[str]:
    process = subprocess.Popen([sys.executable, str(Path(__file__).resolve())], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        yield f"http://127.0.0.1:{int(process.stdout.readline())}"
    finally:
        process.terminate()
        process.wait(10)


def main() -> None:
    from moto.dynamodb.models.table import StreamShard
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
    from werkzeug.serving import BaseWSGIServer, make_server

    BaseWSGIServer.request_queue_size = 1024  # 200 clients connect at once: none may be reset
    # moto backs up every table a transaction touches with a deep copy, stream records included
    # (they only grow): a race of 200 would spend minutes copying them. A cancelled transaction
    # writes no stream record, so the backup can share them.
    StreamShard.__deepcopy__ = lambda self, memo: self  # type: ignore[method-assign]

    class OneRequestPerConnection(MotoRequestHandler):
        protocol_version = "HTTP/1.0"  # an idle keep-alive connection would hold the only thread

        def log_request(self, *args: object, **kwargs: object) -> None:
            pass

    app = DomainDispatcherApplication(create_backend_app)
    server = make_server("127.0.0.1", 0, app, threaded=False, request_handler=OneRequestPerConnection)
    print(server.server_address[1], flush=True)
    sys.stdout.close()
    server.serve_forever()


if __name__ == "__main__":
    main()
