"""One file of a git repository at a pinned commit, read with real git (API.md §6a, imports).

The ref is resolved to a commit SHA once (`git ls-remote`) and the file is read at that commit
from a depth-1 fetch into a throwaway bare repository. Each git runs in its own process group
with no user or system config, no prompts, no hooks, only the file, http and https transports,
no redirects, and an environment of our own (so no proxy and no GIT_* variable of the host
leaks in). http(s) hosts must resolve to public addresses unless allowed, and git is pinned to
the addresses we checked, so a second DNS answer cannot point it elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import re
import shutil
import signal
import tempfile
from pathlib import Path
from typing import Literal, NamedTuple
from urllib.parse import unquote, urlsplit

import msgspec
import structlog

from nome_api.addresses import AddressRefused, public_addresses

log = structlog.get_logger("nome.git")

GitFailureCode = Literal["repo_unreachable", "ref_not_found", "manifest_missing", "too_large"]

_MESSAGE_LIMIT = 300
_STDERR_TAIL = 16 * 1024
_OUTPUT_LIMIT = 1024 * 1024  # ls-remote with patterns answers a few lines
_WATCH_INTERVAL_S = 0.1
_SHA = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
_GITHUB = re.compile(r"github\.com/([A-Za-z0-9][A-Za-z0-9-]{0,38})/([A-Za-z0-9._-]{1,100})/?")
_USERINFO = re.compile(r"(?<=://)[^/\s]*@")
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f]+")
# What git prints when the remote is there but the object or ref is not (with LC_ALL=C).
_NOT_FOUND = (
    b"not our ref",
    b"unadvertised object",
    b"couldn't find remote ref",
    b"no such remote ref",
    b"Unable to find",
    b"Cannot obtain needed object",
)
_SHALLOW_UNSUPPORTED = b"does not support shallow"
_CONFIG = (
    "protocol.allow=never",
    "protocol.file.allow=always",
    "protocol.http.allow=always",
    "protocol.https.allow=always",
    "http.followRedirects=false",
    "core.hooksPath=/dev/null",
    "credential.helper=",
    "core.askPass=true",
    "fetch.recurseSubmodules=false",
    # Keep a received pack as one file (not loose objects), so the size watch sees it grow.
    "fetch.unpackLimit=1",
    "gc.auto=0",
    "maintenance.auto=false",
    "init.defaultBranch=main",
)


class GitFailure(Exception):
    """An import failure from git; `message` is safe to show (no credentials, bounded)."""

    def __init__(self, code: GitFailureCode, message: str) -> None:
        super().__init__(message)
        self.code: GitFailureCode = code
        self.message = message


class Fetched(msgspec.Struct, frozen=True, kw_only=True):
    """A file's bytes and the commit they were read at."""

    commit: str
    content: bytes


def normalise(repo: str) -> str:
    """The git URL for `repo` (an https, http or file URL, or `github.com/OWNER/NAME`).

    Raises ValueError for anything else (ssh, git://, `ext::`, paths, options) and for a URL
    with credentials in it, which would otherwise be kept in the log.
    """
    text = repo.strip()
    if match := _GITHUB.fullmatch(text):
        owner, name = match.groups()
        name = name.removesuffix(".git")
        if name in ("", ".", ".."):
            raise ValueError(f"{name!r} is not a repository name")
        return f"https://github.com/{owner}/{name}.git"
    url = _checked_url(text)
    if "@" in urlsplit(url).netloc:
        raise ValueError("credentials in a repository URL are not accepted")
    return url


def redact(url: str) -> str:
    """`url` (or any text with URLs in it) without the user and password of its URLs."""
    return _USERINFO.sub("", url)


async def fetch_file(
    repo: str,
    ref: str | None,
    path: str,
    *,
    timeout_s: float,
    max_bytes: int,
    max_repo_bytes: int,
    allow_hosts: frozenset[str],
) -> Fetched:
    """Read `path` at the commit `ref` names now (None: the default branch; a full SHA as is).

    Raises GitFailure; ValueError if `repo` is not an https, http or file URL or `path` is not
    a plain relative path. The whole operation is bounded by `timeout_s`, the fetched data by
    `max_repo_bytes` and the file by `max_bytes`.
    """
    url = _checked_url(repo)
    path = _checked_path(path)
    shown = redact(url)
    bound = log.bind(repo=shown, ref=ref, path=path)
    work = Path(tempfile.mkdtemp(prefix="nome-git-"))
    try:
        async with asyncio.timeout(timeout_s):
            session = _Session(url, work, await _pinned_addresses(url, allow_hosts))
            await session.git("init", "-q", "--bare", "--template=")
            commit, refname = await session.resolve(ref)
            await session.fetch(commit, refname, max_repo_bytes)
            content = await session.read(commit, path, max_bytes)
    except TimeoutError:
        bound.warning("git_fetch_timed_out", timeout_s=timeout_s)
        raise GitFailure("repo_unreachable", f"{shown} timed out after {timeout_s:g} s") from None
    except GitFailure as failure:
        bound.info("git_fetch_failed", code=failure.code, message=failure.message)
        raise
    finally:
        # In a thread: a partial fetch may be up to max_repo_bytes of files.
        await asyncio.to_thread(shutil.rmtree, work, ignore_errors=True)
    bound.info("git_fetched", commit=commit, bytes=len(content))
    return Fetched(commit=commit, content=content)


class _Run(NamedTuple):
    returncode: int
    stdout: bytes
    stderr: bytes


class _Session:
    """The git commands of one fetch_file, in one throwaway directory."""

    def __init__(self, url: str, work: Path, pins: list[str]) -> None:
        self.url = url
        self.shown = redact(url)
        self.repo = work / "repo.git"
        self.config = [arg for item in (*_CONFIG, *pins) for arg in ("-c", item)]
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(work),
            "XDG_CONFIG_HOME": str(work),
            "LC_ALL": "C",  # stderr is matched against git's English messages
            "GIT_DIR": str(self.repo),
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": os.devnull,
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_ASKPASS": "true",
            "GIT_PROTOCOL_FROM_USER": "0",
        }
        for name in ("SSL_CERT_FILE", "SSL_CERT_DIR"):
            if name in os.environ:
                self.env[name] = os.environ[name]

    async def resolve(self, ref: str | None) -> tuple[str, str | None]:
        """The commit `ref` names now, and the full ref name when there is one."""
        if ref is not None and _SHA.fullmatch(ref.lower()):
            return ref.lower(), None
        if ref is None or ref == "HEAD":
            refs = await self._ls_remote("HEAD", symref=True)
            if "HEAD" not in refs:
                raise GitFailure("ref_not_found", f"{self.shown} has no default branch")
            return refs["HEAD"], refs.get("ref: HEAD", "HEAD")
        if not _plausible_ref(ref):
            raise GitFailure("ref_not_found", f"{_shown_ref(ref)} is not a valid ref name")
        # git's own order when a name is both a tag and a branch: the tag.
        names = [ref] if ref.startswith("refs/") else [f"refs/tags/{ref}", f"refs/heads/{ref}"]
        refs = await self._ls_remote(*(p for name in names for p in (name, name + "^{}")))
        for name in names:
            # An annotated tag is listed with the commit it points at as `<name>^{}`.
            if commit := refs.get(name + "^{}") or refs.get(name):
                return commit, name
        raise GitFailure(
            "ref_not_found",
            f"no branch or tag {ref!r} in {self.shown} (a commit must be a full SHA)",
        )

    async def fetch(self, commit: str, refname: str | None, max_repo_bytes: int) -> None:
        """Fetch `commit` (by SHA; else by the ref that pointed at it) into the throwaway repo."""
        failed: _Run | None = None
        for want in (commit, refname) if refname else (commit,):
            run = await self._fetch(want, shallow=True, max_repo_bytes=max_repo_bytes)
            if run.returncode != 0 and _SHALLOW_UNSUPPORTED in run.stderr:
                # The dumb http transport fetches whole histories; max_repo_bytes bounds it.
                run = await self._fetch(want, shallow=False, max_repo_bytes=max_repo_bytes)
            if run.returncode == 0 and await self._has_commit(commit):
                return
            failed = run
        assert failed is not None
        if failed.returncode == 0:
            what = f"{refname} no longer points at" if refname else "no commit"
            raise GitFailure("ref_not_found", f"{what} {commit} in {self.shown}; try again")
        if any(marker in failed.stderr for marker in _NOT_FOUND):
            raise GitFailure(
                "ref_not_found",
                f"commit {commit} is not in {self.shown}, or the server does not serve it by SHA",
            )
        raise GitFailure("repo_unreachable", self._explain(failed))

    async def read(self, commit: str, path: str, max_bytes: int) -> bytes:
        """The bytes of `path` at `commit`, refused before reading when over `max_bytes`."""
        check = await self.git("cat-file", "--batch-check", stdin=f"{commit}:{path}\n".encode())
        fields = check.stdout.decode("utf-8", "replace").split()
        if check.returncode != 0 or len(fields) != 3 or fields[1] != "blob":
            raise GitFailure("manifest_missing", f"no file {path} at commit {commit}")
        blob, size = fields[0], int(fields[2])
        if size > max_bytes:
            raise GitFailure(
                "too_large", f"{path} is {size} bytes at commit {commit}; at most {max_bytes}"
            )
        run = await self.git("cat-file", "blob", blob, stdout_limit=max_bytes)
        if run.returncode != 0:
            raise GitFailure("manifest_missing", f"cannot read {path} at commit {commit}")
        return run.stdout

    async def git(
        self,
        *args: str,
        stdin: bytes | None = None,
        stdout_limit: int = _OUTPUT_LIMIT,
        max_repo_bytes: int | None = None,
    ) -> _Run:
        """Run one git to its end; killed with its children when cancelled or over a limit."""
        process = await asyncio.create_subprocess_exec(
            "git",
            *self.config,
            *args,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=self.repo.parent,
            env=self.env,
            # Its own process group, so a kill reaches git-remote-http, index-pack and the rest.
            start_new_session=True,
        )
        over: list[str] = []
        watch = (
            asyncio.create_task(self._watch_size(process, max_repo_bytes, over))
            if max_repo_bytes is not None
            else None
        )
        try:
            if stdin is not None:
                assert process.stdin is not None
                process.stdin.write(stdin)
                with contextlib.suppress(ConnectionError):  # git may exit without reading
                    await process.stdin.drain()
                process.stdin.close()
            assert process.stdout is not None and process.stderr is not None
            stdout, stderr, returncode = await asyncio.gather(
                _read_capped(process, process.stdout, stdout_limit, over),
                _read_tail(process.stderr),
                process.wait(),
            )
        finally:
            if watch is not None:
                watch.cancel()
                await asyncio.wait([watch])
            _kill(process)
            await process.wait()
        # A fast fetch may end between two looks of the watch.
        if (
            not over
            and max_repo_bytes is not None
            and await asyncio.to_thread(_tree_size, self.repo) > max_repo_bytes
        ):
            over.append(f"the repository is larger than {max_repo_bytes} bytes")
        if over:
            raise GitFailure("too_large", f"{self.shown}: {over[0]}")
        return _Run(returncode, stdout, stderr)

    async def _ls_remote(self, *patterns: str, symref: bool = False) -> dict[str, str]:
        """The remote's refs matching `patterns`, name -> SHA (`ref: NAME` -> its target)."""
        options = ("--symref",) if symref else ()
        run = await self.git("ls-remote", *options, "--", self.url, *patterns)
        if run.returncode != 0:
            raise GitFailure("repo_unreachable", self._explain(run))
        refs: dict[str, str] = {}
        for line in run.stdout.decode("utf-8", "replace").splitlines():
            value, _, name = line.partition("\t")
            if value.startswith("ref: "):
                refs["ref: " + name] = value.removeprefix("ref: ")
            else:
                refs[name] = value
        return refs

    async def _fetch(self, want: str, *, shallow: bool, max_repo_bytes: int) -> _Run:
        depth = ("--depth", "1") if shallow else ()
        return await self.git(
            "fetch",
            "-q",
            "--no-tags",
            *depth,
            "--",
            self.url,
            want,
            max_repo_bytes=max_repo_bytes,
        )

    async def _has_commit(self, commit: str) -> bool:
        run = await self.git("cat-file", "-e", f"{commit}^{{commit}}")
        return run.returncode == 0

    async def _watch_size(
        self, process: asyncio.subprocess.Process, limit: int, over: list[str]
    ) -> None:
        while True:
            await asyncio.sleep(_WATCH_INTERVAL_S)
            if await asyncio.to_thread(_tree_size, self.repo) > limit:
                over.append(f"the repository is larger than {limit} bytes")
                _kill(process)
                return

    def _explain(self, run: _Run) -> str:
        """git's own words for a failure, without credentials and bounded."""
        lines = [line.strip() for line in run.stderr.decode("utf-8", "replace").splitlines()]
        lines = [line for line in lines if line]
        chosen = [line for line in lines if line.startswith(("fatal:", "error:"))] or lines[-1:]
        text = "; ".join(dict.fromkeys(chosen)) or f"git exited with {run.returncode}"
        text = _UNPRINTABLE.sub(" ", redact(text.replace(self.url, self.shown)))
        password = urlsplit(self.url).password
        for secret in {password, unquote(password)} if password else ():
            if len(secret) >= 3:
                text = text.replace(secret, "***")
        text = f"{self.shown}: {text}"
        return text if len(text) <= _MESSAGE_LIMIT else text[: _MESSAGE_LIMIT - 1] + "…"


def _checked_url(text: str) -> str:
    """`text` if it is an https, http or file URL git may be given, else ValueError."""
    if not text or any(ch.isspace() or not ch.isprintable() for ch in text):
        raise ValueError("a repository URL has no spaces or control characters")
    if text.startswith(("https://", "http://")):
        parts = urlsplit(text)
        try:
            parts.port  # noqa: B018 - raises ValueError when the port is not a number
        except ValueError:
            raise ValueError("the URL's port is not a number") from None
        if not parts.hostname:
            raise ValueError("the URL has no host")
        return text
    if text.startswith("file://"):
        parts = urlsplit(text)
        if parts.netloc or not parts.path.startswith("/"):
            raise ValueError("a file URL is file:///absolute/path")
        return text
    raise ValueError(
        "the repository must be an https://, http:// or file:// URL, or github.com/OWNER/NAME"
    )


def _checked_path(path: str) -> str:
    parts = path.split("/")
    if not path or any(part in ("", ".", "..") for part in parts) or not path.isprintable():
        raise ValueError(f"{path!r} is not a plain relative path")
    return path


def _plausible_ref(ref: str) -> bool:
    """Loosely git's ref-name rules: enough that a ref is never read as an option or refspec."""
    return (
        0 < len(ref) <= 255
        and ref.isprintable()
        and not ref.startswith(("-", "/"))
        and not any(ch in ref for ch in " :^~?*[\\")
        and ".." not in ref
        and "@{" not in ref
    )


def _shown_ref(ref: str) -> str:
    return repr(ref[:80] + ("…" if len(ref) > 80 else ""))


async def _pinned_addresses(url: str, allow_hosts: frozenset[str]) -> list[str]:
    """Config pinning an http(s) host to its checked public addresses; refused if not public."""
    parts = urlsplit(url)
    host = parts.hostname
    if parts.scheme not in ("http", "https") or host is None or host in allow_hosts:
        return []
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        addresses = await public_addresses(host, port)
    except AddressRefused as exc:
        raise GitFailure("repo_unreachable", f"{redact(url)} is not allowed: {exc}") from None
    with contextlib.suppress(ValueError):
        ipaddress.ip_address(host)
        return []  # an address, not a name: nothing for DNS to change
    listed = ",".join(f"[{a}]" if ":" in a else a for a in addresses)
    return [f"http.curloptResolve={host}:{port}:{listed}"]


async def _read_capped(
    process: asyncio.subprocess.Process,
    stream: asyncio.StreamReader,
    limit: int,
    over: list[str],
) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while chunk := await stream.read(64 * 1024):
        size += len(chunk)
        if size > limit:
            if not over:
                over.append(f"git answered with more than {limit} bytes")
                _kill(process)
            continue
        chunks.append(chunk)
    return b"".join(chunks)


async def _read_tail(stream: asyncio.StreamReader) -> bytes:
    tail = b""
    while chunk := await stream.read(64 * 1024):
        tail = (tail + chunk)[-_STDERR_TAIL:]
    return tail


def _kill(process: asyncio.subprocess.Process) -> None:
    # Only while git is not yet reaped: its pid, and so its group id, is still ours.
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)


def _tree_size(root: Path) -> int:
    total = 0
    for directory, _, files in os.walk(root):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(directory, name)).st_size
    return total
