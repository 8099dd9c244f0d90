"""The sandbox container image, built and run with buildah on a machine without a Docker engine.

`make sandbox-image` (= `python -m devstack.sandbox_image build`) builds `sandbox/Dockerfile` as
written, with `buildah bud --isolation chroot` (the default OCI runtime cannot run here). The
Dockerfile's `BASE_IMAGE` build argument stays the production base (`python:3.13-slim-bookworm`);
with no registry to pull it from, the base here is Debian trixie (Python 3.13) made with
debootstrap from Debian's packages.

Both builds are done once and reused:
- the base is tagged with a hash of its recipe (suite, packages) and never changes with our code;
- the image is tagged with a hash of its inputs (the Dockerfile, `.dockerignore`,
  `requirements.txt`, `constraints.txt`, `openhands_sandbox/**`, the base): a build is skipped
  when that tag is already in buildah's storage (`/var/lib/containers/storage`).

`SANDBOX_BASE_IMAGE=<image>` builds on another base instead (`python:3.13-slim-bookworm` where
a registry is reachable). `DEBIAN_MIRROR` changes where debootstrap downloads from.

`python -m devstack.sandbox_image ref` prints the image reference the current inputs give, and
exits 1 when it is not built.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parent.parent
SANDBOX_DIR = ROOT / "sandbox"
IMAGE_REPOSITORY = "localhost/openhands-sandbox"
BASE_REPOSITORY = "localhost/openhands-sandbox-base"
BASE_SUITE = "trixie"  # Debian 13: Python 3.13, as the production base
BASE_PACKAGES = ("bash", "ca-certificates", "git", "python3", "python3-venv", "tmux")
"""What the Dockerfile needs of its base: a Python 3.13 with venv; git, tmux, bash (which the
Dockerfile would otherwise install with apt-get)."""
DEBIAN_MIRROR = os.environ.get("DEBIAN_MIRROR", "http://deb.debian.org/debian")
BUILDER_PACKAGES = ("buildah", "debootstrap")
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
IMAGE_INPUTS = ("Dockerfile", ".dockerignore", "requirements.txt", "constraints.txt")
PACKAGE_DIR = "openhands_sandbox"
SCRATCH_ROOT = Path("/var/tmp")  # noqa: S108 - the rootfs is large; /tmp may be a small tmpfs
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class ImageError(RuntimeError):
    """The image cannot be built or run here (a tool is missing, a build step failed)."""


def _digest(parts: Sequence[tuple[str, bytes]]) -> str:
    hasher = hashlib.sha256()
    for name, content in parts:
        hasher.update(name.encode() + b"\0" + hashlib.sha256(content).digest())
    return hasher.hexdigest()[:16]


def base_reference() -> str:
    """The local base image for this recipe: `localhost/openhands-sandbox-base:trixie-<hash>`."""
    recipe = json.dumps({"suite": BASE_SUITE, "packages": BASE_PACKAGES, "path": BASE_PATH}).encode()
    return f"{BASE_REPOSITORY}:{BASE_SUITE}-{_digest([('recipe', recipe)])}"


def image_input_files(sandbox_dir: Path = SANDBOX_DIR) -> list[Path]:
    """Every file the image is built from, in a stable order (no bytecode caches)."""
    files = [sandbox_dir / name for name in IMAGE_INPUTS if (sandbox_dir / name).exists()]
    package = sandbox_dir / PACKAGE_DIR
    files.extend(
        sorted(
            path
            for path in package.rglob("*")
            if path.is_file() and "__pycache__" not in path.parts and path.suffix not in {".pyc", ".pyo"}
        )
    )
    return files


def image_reference(base: str | None = None, sandbox_dir: Path = SANDBOX_DIR) -> str:
    """`localhost/openhands-sandbox:<hash of the inputs and the base>`."""
    base = base or configured_base()
    parts = [(str(path.relative_to(sandbox_dir)), path.read_bytes()) for path in image_input_files(sandbox_dir)]
    parts.append(("BASE_IMAGE", base.encode()))
    return f"{IMAGE_REPOSITORY}:{_digest(parts)}"


def configured_base() -> str:
    """`SANDBOX_BASE_IMAGE` when set (`python:3.13-slim-bookworm` where a registry is reachable),
    else the debootstrap base."""
    return os.environ.get("SANDBOX_BASE_IMAGE") or base_reference()


# -- buildah --------------------------------------------------------------------------------------


def buildah_available() -> bool:
    return shutil.which("buildah") is not None


def _buildah(*arguments: str, capture: bool = True, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["buildah", *arguments],
        capture_output=capture,
        text=True,
        check=False,
    )
    if check and result.returncode != 0:
        detail = (result.stderr or "").strip()[-2000:] if capture else f"exit code {result.returncode}"
        raise ImageError(f"buildah {arguments[0]} failed: {detail}")
    return result


def image_exists(reference: str) -> bool:
    if not buildah_available():
        return False
    return _buildah("inspect", "--type", "image", reference, check=False).returncode == 0


def image_size(reference: str) -> str:
    """The image's size as buildah reports it ("984 MB": its layers, uncompressed)."""
    listing = json.loads(_buildah("images", "--json", reference).stdout or "[]")
    return str(listing[0].get("size", "?")) if listing else "?"


def install_builder_packages() -> None:
    """buildah and debootstrap from Debian's packages (the machine is Debian)."""
    missing = [name for name in BUILDER_PACKAGES if shutil.which(name) is None]
    if not missing:
        return
    if os.geteuid() != 0:
        raise ImageError(f"{', '.join(missing)} missing: apt-get install -y {' '.join(BUILDER_PACKAGES)} (as root)")
    print(f"sandbox image: installing {' '.join(BUILDER_PACKAGES)} from Debian's packages", flush=True)
    environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *BUILDER_PACKAGES]):
        if subprocess.run(argv, env=environment, check=False).returncode != 0:
            raise ImageError(f"{' '.join(argv)} failed")


# -- builds ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BuildResult:
    reference: str
    built: bool
    """False when the tag was already there."""
    seconds: float


def build_base(reference: str | None = None) -> BuildResult:
    """debootstrap a minimal trixie, import it as an image (`FROM scratch` + the rootfs)."""
    reference = reference or base_reference()
    started = time.monotonic()
    if image_exists(reference):
        return BuildResult(reference, built=False, seconds=0.0)
    if os.geteuid() != 0:
        raise ImageError("building the base image needs root (debootstrap, buildah's storage)")
    scratch = Path(tempfile.mkdtemp(prefix="openhands-sandbox-base-", dir=SCRATCH_ROOT))
    rootfs = scratch / "rootfs"
    try:
        print(f"sandbox image: debootstrap {BASE_SUITE} ({', '.join(BASE_PACKAGES)})", flush=True)
        argv = [
            "debootstrap",
            "--variant=minbase",
            f"--include={','.join(BASE_PACKAGES)}",
            BASE_SUITE,
            str(rootfs),
            DEBIAN_MIRROR,
        ]
        log_path = scratch / "debootstrap.log"
        with log_path.open("wb") as log_file:
            code = subprocess.run(argv, stdout=log_file, stderr=subprocess.STDOUT, check=False).returncode
        if code != 0:
            tail = log_path.read_text(errors="replace")[-2000:]
            raise ImageError(f"debootstrap failed (exit code {code}):\n{tail}")
        # No apt caches or lists in the image; the Dockerfile's apt-get step fetches its own if needed.
        for leftover in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for path in (rootfs / leftover).glob("*"):
                if path.is_file():
                    path.unlink()
        container = _buildah("from", "scratch").stdout.strip()
        try:
            _buildah("copy", container, f"{rootfs}/", "/")
            _buildah("config", "--env", f"PATH={BASE_PATH}", "--env", "LANG=C.UTF-8", "--cmd", "/bin/bash", container)
            _buildah("commit", "--rm", container, reference)
        except BaseException:
            _buildah("rm", container, check=False)
            raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return BuildResult(reference, built=True, seconds=time.monotonic() - started)


def build_image(base: str | None = None, reference: str | None = None) -> BuildResult:
    """`buildah bud` of sandbox/Dockerfile with `BASE_IMAGE=<base>`, tagged with its input hash."""
    base = base or configured_base()
    reference = reference or image_reference(base)
    started = time.monotonic()
    if image_exists(reference):
        return BuildResult(reference, built=False, seconds=0.0)
    argv = [
        "bud",
        "--isolation",
        "chroot",
        "--layers",
        "--force-rm",  # no working container left behind by a failed step
        "--build-arg",
        f"BASE_IMAGE={base}",
        "--tag",
        reference,
        "--tag",
        f"{IMAGE_REPOSITORY}:latest",
    ]
    if HOST_CA_BUNDLE.is_file():
        # pip inside the build must trust what this machine trusts (a TLS-inspecting proxy's CA).
        argv += ["--volume", f"{HOST_CA_BUNDLE}:{HOST_CA_BUNDLE}:ro"]
    argv += ["--file", str(SANDBOX_DIR / "Dockerfile"), str(SANDBOX_DIR)]
    print(f"sandbox image: buildah {' '.join(argv)}", flush=True)
    _buildah(*argv, capture=False)
    return BuildResult(reference, built=True, seconds=time.monotonic() - started)


def ensure_image() -> str:
    """Build what is missing (builder packages, base, image); return the image reference."""
    install_builder_packages()
    base = configured_base()
    if base == base_reference():
        result = build_base(base)
        if result.built:
            print(f"sandbox image: base {base} built in {result.seconds:.0f} s", flush=True)
    elif not image_exists(base):
        print(f"sandbox image: {base} is not in buildah's storage: buildah pulls it", flush=True)
    image = build_image(base)
    if image.built:
        size = image_size(image.reference)
        print(f"sandbox image: {image.reference} built in {image.seconds:.0f} s ({size})", flush=True)
    else:
        print(f"sandbox image: {image.reference} is up to date", flush=True)
    return image.reference


# -- running sandboxes from the image (devstack --sandbox-image) ------------------------------------

TASK_DIRECTORY_IN_CONTAINER = "/run/devstack-task"
ENVIRONMENT_FILE = "environment"
LOAD_ENVIRONMENT_AND_EXEC = (
    f"set -a && . {TASK_DIRECTORY_IN_CONTAINER}/{ENVIRONMENT_FILE} && set +a"
    f' && rm -f {TASK_DIRECTORY_IN_CONTAINER}/{ENVIRONMENT_FILE} && exec "$@"'
)
"""What runs before the image's entrypoint: `buildah run` takes variables only on its command
line, which every user of the machine can read (/proc/<pid>/cmdline), so the task's environment
(the sealed token, the credentials endpoint's token) goes through a root-only file instead,
removed as soon as it is read; then the entrypoint replaces the shell (same pid, same argv)."""
VARIABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def image_config(reference: str) -> dict[str, Any]:
    """The image's OCI configuration: Entrypoint, Cmd, Env, User, WorkingDir, ..."""
    info = json.loads(_buildah("inspect", "--type", "image", reference).stdout)
    return dict(info.get("OCIv1", {}).get("config", {}) or {})


def image_entrypoint(reference: str) -> list[str]:
    """The image's ENTRYPOINT followed by its CMD, as a container runtime starts it."""
    config = image_config(reference)
    command = [*(config.get("Entrypoint") or []), *(config.get("Cmd") or [])]
    if not command:
        raise ImageError(f"{reference} has no entrypoint")
    return command


def environment_file_text(environment: dict[str, str]) -> str:
    """`NAME='value'` lines a POSIX shell reads back exactly."""
    lines = []
    for name, value in environment.items():
        if not VARIABLE_NAME.match(name) or "\0" in value:
            raise ImageError(f"cannot pass the variable {name!r} to a container")
        lines.append(f"{name}={shlex.quote(value)}")
    return "\n".join(lines) + "\n"


@dataclass
class SandboxContainer:
    """One sandbox task as a buildah working container, run with chroot isolation.

    chroot isolation shares the machine's network (the sandbox reaches the local control plane
    on 127.0.0.1, and the control plane reaches its agent-server there) and its PID namespace
    (the container's processes are visible from the machine and keep the task's marker
    variable, so what leaves the process group is still found and killed). The container's
    own filesystem (its /tmp, HOME directories) goes with `buildah rm`.
    """

    name: str
    image: str
    process: subprocess.Popen[bytes] | None = None

    @classmethod
    def create(cls, image: str, name: str) -> SandboxContainer:
        _buildah("from", "--pull=never", "--quiet", "--name", name, image)
        return cls(name, image)

    def start(
        self,
        environment: dict[str, str],
        *,
        public_environment: dict[str, str],
        mounts: dict[Path, str],
        private_dir: Path,
        log_file: IO[bytes],
    ) -> subprocess.Popen[bytes]:
        """Run the image's entrypoint with `environment` (through a file in `private_dir`, root
        only) and `public_environment` (on buildah's command line: nothing secret)."""
        private_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        private_dir.chmod(0o700)
        environment_path = private_dir / ENVIRONMENT_FILE
        descriptor = os.open(environment_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(environment_file_text(environment))
        argv = ["buildah", "run", "--isolation", "chroot"]
        for name, value in public_environment.items():
            argv += ["--env", f"{name}={value}"]
        for host_path, container_path in {**mounts, private_dir: TASK_DIRECTORY_IN_CONTAINER}.items():
            argv += ["--volume", f"{host_path}:{container_path}"]
        argv += [self.name, "--", "/bin/sh", "-c", LOAD_ENVIRONMENT_AND_EXEC, "devstack-task"]
        argv += image_entrypoint(self.image)
        self.process = subprocess.Popen(
            argv,
            env={"PATH": os.environ.get("PATH", BASE_PATH)},
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self.process

    def run(
        self, argv: Sequence[str], *, user: str | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """One command in the container (not the entrypoint), as the image's user or `user`."""
        options = ["--user", user] if user else []
        return subprocess.run(
            ["buildah", "run", "--isolation", "chroot", *options, self.name, "--", *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def remove(self) -> None:
        _buildah("rm", self.name, check=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack.sandbox_image", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["build", "ref"], help="build what is missing / print the reference")
    parser.add_argument(
        "--unless-impossible",
        action="store_true",
        help="exit 0 with a note when this machine cannot build it (not root): `make test` then skips tests/image",
    )
    arguments = parser.parse_args(argv)
    if arguments.command == "ref":
        reference = image_reference()
        print(reference)
        return 0 if image_exists(reference) else 1
    if arguments.unless_impossible and os.geteuid() != 0 and not image_exists(image_reference()):
        print("sandbox image: not built (buildah needs root here); tests/image will be skipped", flush=True)
        return 0
    try:
        ensure_image()
    except ImageError as error:
        print(f"sandbox image: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
