"""A moto server that handles one request at a time, run as its own process by the race tests.

moto's backends take no lock: two requests handled at once (in-process `mock_aws` with threads,
or `ThreadedMotoServer`) corrupt each other's TransactWriteItems. Handling requests one after
another makes every AWS call atomic, which is what DynamoDB guarantees; the interleaving of
*calls* from concurrent clients stays as real as it gets. Prints the port, then serves until killed.
"""

from __future__ import annotations

import sys

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import make_server


class OneRequestPerConnection(MotoRequestHandler):
    # HTTP/1.0 closes each connection after its answer: an idle keep-alive connection would
    # otherwise hold the single-threaded server while other clients wait.
    protocol_version = "HTTP/1.0"

    def log_request(self, *args: object, **kwargs: object) -> None:
        pass


def main() -> None:
    server = make_server(
        "127.0.0.1",
        0,
        DomainDispatcherApplication(create_backend_app),
        threaded=False,
        request_handler=OneRequestPerConnection,
    )
    print(server.server_address[1], flush=True)
    sys.stdout.close()
    server.serve_forever()


if __name__ == "__main__":
    main()
