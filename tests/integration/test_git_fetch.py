"""nome_api.git against real repositories made here: file:// URLs, a dumb-http server on
127.0.0.1, and a server that accepts and never answers."""

from __future__ import annotations

import asyncio
import functools
import os
import socket
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from nome_api import git

MANIFEST = "nome-package.json"
LOCAL = frozenset({"127.0.0.1"})
# Safety bound only: how long a test waits for killed git processes to be gone.
GONE_LIMIT_S = 10.0


def run_git(cwd: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
    )
    return done.stdout.strip()


def commit(repo: Path, files: dict[str, bytes], message: str) -> str:
    for name, content in files.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_bytes(content)
    run_git(repo, "add", "--all")
    run_git(repo, "commit", "-q", "-m", message)
    return run_git(repo, "rev-parse", "HEAD")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "package"
    path.mkdir()
    run_git(path, "init", "-q", "-b", "trunk")
    return path


def url(path: Path) -> str:
    return path.as_uri()


async def fetch(
    repo: str,
    ref: str | None,
    *,
    path: str = MANIFEST,
    timeout_s: float = 30.0,
    max_bytes: int = 256 * 1024,
    max_repo_bytes: int = 10 * 1024 * 1024,
    allow_hosts: frozenset[str] = frozenset(),
) -> git.Fetched:
    return await git.fetch_file(
        repo,
        ref,
        path,
        timeout_s=timeout_s,
        max_bytes=max_bytes,
        max_repo_bytes=max_repo_bytes,
        allow_hosts=allow_hosts,
    )


async def failure(repo: str, ref: str | None, **kwargs: Any) -> git.GitFailure:
    with pytest.raises(git.GitFailure) as caught:
        await fetch(repo, ref, **kwargs)
    return caught.value


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A static http server on 127.0.0.1 over a directory: git's dumb http protocol."""
    root = tmp_path / "www"
    root.mkdir()

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=root))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def publish(repo: Path, root: Path) -> str:
    """A bare copy of `repo` under `root`, as a dumb-http server serves it; its path there."""
    run_git(root, "clone", "-q", "--bare", str(repo), "package.git")
    run_git(root / "package.git", "update-server-info")
    return "/package.git"


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port on 127.0.0.1 whose connections are accepted (by the kernel) and never answered."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield int(sock.getsockname()[1])


def processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and entry.name != str(os.getpid()):
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if text.encode() in cmdline:
                found.append(int(entry.name))
    return found


# Resolving refs to commits


async def test_no_ref_reads_the_default_branch_at_its_commit(repo: Path) -> None:
    head = commit(repo, {MANIFEST: b'{"name": "demo"}'}, "first")
    fetched = await fetch(url(repo), None)
    assert fetched == git.Fetched(commit=head, content=b'{"name": "demo"}')


async def test_a_branch_a_tag_and_a_full_sha_each_read_their_own_commit(repo: Path) -> None:
    first = commit(repo, {MANIFEST: b"v1"}, "first")
    run_git(repo, "tag", "-a", "v1.0.0", "-m", "release")  # annotated: peeled to its commit
    run_git(repo, "branch", "stable")
    second = commit(repo, {MANIFEST: b"v2"}, "second")
    run_git(repo, "tag", "light")

    assert await fetch(url(repo), "stable") == git.Fetched(commit=first, content=b"v1")
    assert await fetch(url(repo), "v1.0.0") == git.Fetched(commit=first, content=b"v1")
    assert await fetch(url(repo), "light") == git.Fetched(commit=second, content=b"v2")
    assert await fetch(url(repo), "refs/heads/trunk") == git.Fetched(commit=second, content=b"v2")
    assert await fetch(url(repo), first) == git.Fetched(commit=first, content=b"v1")
    assert await fetch(url(repo), first.upper()) == git.Fetched(commit=first, content=b"v1")


async def test_a_file_in_a_folder_is_read(repo: Path) -> None:
    commit(repo, {"sub/dir/file.txt": b"deep"}, "first")
    assert (await fetch(url(repo), None, path="sub/dir/file.txt")).content == b"deep"


async def test_a_pinned_commit_still_reads_old_content_after_the_branch_moves(repo: Path) -> None:
    old = commit(repo, {MANIFEST: b"old"}, "first")
    pinned = await fetch(url(repo), "trunk")

    new = commit(repo, {MANIFEST: b"new"}, "second")

    assert await fetch(url(repo), pinned.commit) == git.Fetched(commit=old, content=b"old")
    assert await fetch(url(repo), "trunk") == git.Fetched(commit=new, content=b"new")


# Failures


async def test_an_unknown_branch_is_ref_not_found(repo: Path) -> None:
    commit(repo, {MANIFEST: b"{}"}, "first")
    assert (await failure(url(repo), "nope")).code == "ref_not_found"


async def test_an_unknown_commit_is_ref_not_found(repo: Path) -> None:
    commit(repo, {MANIFEST: b"{}"}, "first")
    assert (await failure(url(repo), "0" * 40)).code == "ref_not_found"


async def test_an_abbreviated_sha_is_not_taken_for_a_commit(repo: Path) -> None:
    head = commit(repo, {MANIFEST: b"{}"}, "first")
    failed = await failure(url(repo), head[:12])
    assert failed.code == "ref_not_found"
    assert "full SHA" in failed.message


async def test_a_ref_that_looks_like_an_option_is_ref_not_found(repo: Path) -> None:
    commit(repo, {MANIFEST: b"{}"}, "first")
    for ref in ("--upload-pack=touch /tmp/x", "a:b", "+trunk", "trunk^{}"):
        assert (await failure(url(repo), ref)).code == "ref_not_found", ref


async def test_an_empty_repository_has_no_default_branch(repo: Path) -> None:
    assert (await failure(url(repo), None)).code == "ref_not_found"


async def test_a_missing_file_is_manifest_missing(repo: Path) -> None:
    head = commit(repo, {"README": b"hi", "folder/x": b"x"}, "first")
    failed = await failure(url(repo), None)
    assert failed.code == "manifest_missing"
    assert head in failed.message
    assert (await failure(url(repo), None, path="folder")).code == "manifest_missing"


async def test_a_file_over_max_bytes_is_too_large(repo: Path) -> None:
    commit(repo, {MANIFEST: b"x" * 2000}, "first")
    failed = await failure(url(repo), None, max_bytes=1000)
    assert failed.code == "too_large"
    assert "2000" in failed.message
    assert (await fetch(url(repo), None, max_bytes=2000)).content == b"x" * 2000


async def test_a_repository_over_max_repo_bytes_is_too_large(repo: Path) -> None:
    commit(repo, {MANIFEST: b"{}", "blob.bin": os.urandom(512 * 1024)}, "first")
    failed = await failure(url(repo), None, max_repo_bytes=100 * 1024)
    assert failed.code == "too_large"
    assert (await fetch(url(repo), None, max_repo_bytes=2 * 1024 * 1024)).content == b"{}"


async def test_a_path_that_is_no_repository_is_unreachable(tmp_path: Path) -> None:
    (tmp_path / "plain").mkdir()
    for missing in (tmp_path / "plain", tmp_path / "absent"):
        assert (await failure(url(missing), None)).code == "repo_unreachable"


async def test_the_temporary_directory_is_removed(repo: Path, tmp_path: Path) -> None:
    commit(repo, {MANIFEST: b"{}"}, "first")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TMPDIR", str(scratch))
        patch.setattr(tempfile, "tempdir", None)
        await fetch(url(repo), None)
        await failure(url(repo), "nope")
    assert list(scratch.iterdir()) == []


async def test_a_server_refusing_fetch_by_sha_still_serves_a_tag_through_the_tag(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Over protocol v0 an upload-pack serves only advertised tips, and a tag's commit is not one.
    tagged = commit(repo, {MANIFEST: b"tagged"}, "first")
    run_git(repo, "tag", "-a", "v1", "-m", "release")
    commit(repo, {MANIFEST: b"later"}, "second")
    monkeypatch.setattr(git, "_CONFIG", (*git._CONFIG, "protocol.version=0"))

    assert await fetch(url(repo), "v1") == git.Fetched(commit=tagged, content=b"tagged")
    assert (await failure(url(repo), tagged)).code == "ref_not_found"


# Over http


async def test_a_repository_is_read_over_http_from_an_allowed_host(
    repo: Path, served: tuple[str, Path]
) -> None:
    base, root = served
    first = commit(repo, {MANIFEST: b"one"}, "first")
    run_git(repo, "tag", "v1")
    second = commit(repo, {MANIFEST: b"two"}, "second")
    remote = base + publish(repo, root)

    assert await fetch(remote, None, allow_hosts=LOCAL) == git.Fetched(
        commit=second, content=b"two"
    )
    assert await fetch(remote, "v1", allow_hosts=LOCAL) == git.Fetched(commit=first, content=b"one")
    assert (await failure(remote, "nope", allow_hosts=LOCAL)).code == "ref_not_found"
    assert (await failure(base + "/absent.git", None, allow_hosts=LOCAL)).code == (
        "repo_unreachable"
    )


async def test_a_loopback_host_is_refused_unless_allowed(
    repo: Path, served: tuple[str, Path]
) -> None:
    base, root = served
    commit(repo, {MANIFEST: b"{}"}, "first")
    remote = base + publish(repo, root)
    for host in (remote, remote.replace("127.0.0.1", "localhost")):
        failed = await failure(host, None)
        assert failed.code == "repo_unreachable"
        assert "non-public address" in failed.message


async def test_git_connects_only_to_the_addresses_that_were_checked(
    repo: Path, served: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A name no DNS answers: git reaches the server only through the pinned address.
    base, root = served
    head = commit(repo, {MANIFEST: b"{}"}, "first")
    remote = base.replace("127.0.0.1", "packages.nome.invalid") + publish(repo, root)

    async def resolved(host: str, port: int) -> list[str]:
        assert host == "packages.nome.invalid"
        return ["127.0.0.1"]

    monkeypatch.setattr(git, "public_addresses", resolved)
    assert (await fetch(remote, None)).commit == head


async def test_credentials_in_the_url_never_appear_in_messages_or_logs() -> None:
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    with capture_logs() as logs:
        refused = await failure(f"http://alice:s3cret-token@127.0.0.1:{port}/x.git", None)
        unreachable = await failure(
            f"http://alice:s3cret-token@127.0.0.1:{port}/x.git", None, allow_hosts=LOCAL
        )
    assert refused.code == unreachable.code == "repo_unreachable"
    assert "127.0.0.1" in unreachable.message  # git's own words are kept
    for text in (refused.message, unreachable.message, repr(logs)):
        assert "s3cret-token" not in text
        assert "alice" not in text
    assert len(unreachable.message) <= 300


async def test_a_silent_remote_times_out_and_its_git_processes_are_killed(
    silent_port: int,
) -> None:
    remote = f"http://127.0.0.1:{silent_port}/hang.git"
    failed = await failure(remote, None, timeout_s=1, allow_hosts=LOCAL)
    assert failed.code == "repo_unreachable"
    assert "timed out after 1 s" in failed.message

    deadline = asyncio.get_running_loop().time() + GONE_LIMIT_S
    while processes_mentioning(remote):
        assert asyncio.get_running_loop().time() < deadline, processes_mentioning(remote)
        await asyncio.sleep(0.05)


async def test_a_silent_remote_does_not_hold_up_the_event_loop(silent_port: int) -> None:
    remote = f"http://127.0.0.1:{silent_port}/hang.git"
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.create_task(tick())
    await failure(remote, None, timeout_s=1, allow_hosts=LOCAL)
    ticker.cancel()
    assert ticks > 10


# normalise


def test_github_shorthand_becomes_an_https_url() -> None:
    assert git.normalise("github.com/acme/tools") == "https://github.com/acme/tools.git"
    assert git.normalise(" github.com/acme/tools.git ") == "https://github.com/acme/tools.git"
    assert git.normalise("github.com/a-b/x.y_z/") == "https://github.com/a-b/x.y_z.git"


def test_https_http_and_file_urls_are_kept() -> None:
    for repo in (
        "https://gitlab.example.com/group/project.git",
        "http://127.0.0.1:8080/package.git",
        "file:///srv/git/package",
    ):
        assert git.normalise(repo) == repo


@pytest.mark.parametrize(
    "repo",
    [
        "ssh://git@github.com/acme/tools.git",
        "git@github.com:acme/tools.git",
        "git://github.com/acme/tools.git",
        "ext::sh -c touch% /tmp/pwned",
        "ext::true",
        "https::ext::true",
        "-oProxyCommand=x",
        "--upload-pack=touch /tmp/x",
        "../x",
        "/srv/git/package",
        "file://host/srv/git",
        "https://",
        "https://host:port/x",
        "https://alice:secret@github.com/acme/tools.git",
        "https://host/with space",
        "https://host/x\nextra",
        "github.com/acme",
        "github.com/-acme/tools",
        "",
    ],
)
def test_other_repositories_are_refused(repo: str) -> None:
    with pytest.raises(ValueError, match=r"."):
        git.normalise(repo)


async def test_fetch_file_refuses_what_normalise_refuses(repo: Path) -> None:
    for bad in ("ext::sh -c true", "-oProxyCommand=x", "ssh://host/x.git"):
        with pytest.raises(ValueError):
            await fetch(bad, None)
    with pytest.raises(ValueError):
        await fetch(url(repo), None, path="../etc/passwd")
