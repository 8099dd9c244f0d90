"""Reads a remote repository's refs over the real git protocol (dulwich: no git binary in Lambda).

dulwich is imported when refs are first read, not with this module: only a function that
verifies a repository (a create, in the API and the event intake) loads it."""

from __future__ import annotations

import concurrent.futures
from dataclasses import dataclass

import urllib3

from conversation_service.models.errors import RemoteAccessDenied, RemoteUnavailable


@dataclass(frozen=True)
class RemoteRefs:
    branches: dict[str, str]  # branch name -> commit sha
    default_branch: str | None


_executor = concurrent.futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="ls-remote")


def _pool_manager(timeout: float) -> urllib3.PoolManager:
    # No redirects: a redirect could point the request at an address we did not check.
    retries = urllib3.Retry(total=1, connect=1, read=0, redirect=0, raise_on_redirect=True)
    return urllib3.PoolManager(timeout=urllib3.Timeout(connect=timeout, read=timeout), retries=retries)


def _read_refs(url: str, username: str | None, password: str | None, timeout: float) -> RemoteRefs:
    from dulwich.client import get_transport_and_path

    kwargs: dict[str, object] = {}
    if url.startswith(("http://", "https://")):
        kwargs["pool_manager"] = _pool_manager(timeout)
        if password:
            kwargs["username"] = username or "git"
            kwargs["password"] = password
    client, path = get_transport_and_path(url, **kwargs)  # type: ignore[arg-type]
    result = client.get_refs(path.encode() if isinstance(path, str) else path)
    branches = {
        name.decode()[len("refs/heads/") :]: sha.decode()
        for name, sha in result.refs.items()
        if name.startswith(b"refs/heads/") and sha is not None
    }
    symrefs: dict[bytes, bytes] = dict(result.symrefs or {})  # type: ignore[arg-type]
    head_target = symrefs.get(b"HEAD")
    default_branch = None
    if head_target and head_target.startswith(b"refs/heads/"):
        default_branch = head_target.decode()[len("refs/heads/") :]
    return RemoteRefs(branches=branches, default_branch=default_branch)


def list_remote_refs(url: str, *, username: str | None, password: str | None, timeout: float) -> RemoteRefs:
    """`git ls-remote` through dulwich, bounded by `timeout` seconds whatever the transport."""
    from dulwich.client import HTTPUnauthorized
    from dulwich.errors import GitProtocolError, HangupException, NotGitRepository

    future = _executor.submit(_read_refs, url, username, password, timeout)
    try:
        return future.result(timeout=timeout + 1)
    except concurrent.futures.TimeoutError as error:
        raise RemoteUnavailable(f"no answer within {timeout:g} s") from error
    except (HTTPUnauthorized, NotGitRepository) as error:
        raise RemoteAccessDenied(type(error).__name__) from error
    except GitProtocolError as error:
        text = str(error).lower()
        if any(marker in text for marker in ("401", "403", "404", "not found", "unauthorized", "forbidden")):
            raise RemoteAccessDenied(type(error).__name__) from error
        raise RemoteUnavailable(type(error).__name__) from error
    except (HangupException, OSError, urllib3.exceptions.HTTPError) as error:
        raise RemoteUnavailable(type(error).__name__) from error
