"""The code state of a run: the git commit and a digest of everything not committed.

Asking git takes several processes (``rev-parse``, ``diff``, ``ls-files``),
about 5 ms each, and a sweep starts hundreds of runs from one checkout that
does not change in between. :class:`GitCapture` therefore keeps the last
answer per working directory and gives it again while a *fingerprint* of
everything the answer depends on is unchanged. The fingerprint is an
``lstat`` (modification and change time in nanoseconds, size, inode, mode)
of:

- the repository's ``HEAD``, the ref it names, ``packed-refs``, the index,
  the repository's and the user's git config and exclude files — a commit,
  a checkout, ``git add`` or a new ignore rule changes one of them;
- every tracked and every untracked, not ignored file — an edit changes the
  file's times even when it keeps the size;
- every directory of the work tree that git looks into, and the
  ``.gitignore`` files in them — a new file changes its directory's time.
  Directories git skips as a whole are left out: those an ignore rule
  matches (``.venv/``, ``__pycache__/``) and those whose own ``.gitignore``
  ignores everything, as a Keel home's does.

Checking it is one ``lstat`` per file and folder: about a millisecond for a
repository of 200 files on a slow machine, against 20-40 ms for the git
processes (and their cost grows with the repository just the same). A
wrong answer would be worse than a slow one, so the cache errs towards
asking git again:

- A file may change twice within one tick of the file system's clock and
  keep its size; ``lstat`` would then not tell. Git calls this "racily
  clean". An answer is not kept when anything in its fingerprint changed
  within :data:`RACY_WINDOW_NS` of the capture, so the next capture asks git
  again, by which time such a file is no longer racy.
- The fingerprint is taken before git is asked and again after; an answer
  is kept only when both agree and git listed the same files both times, so
  a change made while git ran is never hidden under an older fingerprint.
- Nothing is cached, and git is asked every time, when the layout is one
  the fingerprint does not cover: ``GIT_DIR``/``GIT_WORK_TREE`` set, a bare
  repository, submodules, the reftable ref format, or a repository git
  finds somewhere other than the ``.git`` this module finds.

Not watched: config files pulled in with ``[include]`` and a system config
outside ``/etc/gitconfig``. They change how git prints a diff, rarely which
files count, and an edit to the repository's own files still shows.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import blake3

__all__ = [
    "MAX_ENTRIES",
    "RACY_WINDOW_NS",
    "GitCapture",
    "GitState",
    "capture_git",
    "git_capture",
]

#: Changes younger than this (ns) at capture time keep an answer out of the cache.
#: Generous: file systems stamp times in ticks from a few ms (ext4, tmpfs) to 2 s (FAT).
RACY_WINDOW_NS = 3_000_000_000

#: Working folders remembered at once; a process rarely starts runs from more than one.
MAX_ENTRIES = 16

_UNTRACKED_CONTENT_LIMIT = 16 << 20  # larger untracked files count by path, size and mtime
#: Variables that make git look for the repository elsewhere than this module does.
_RELOCATING_ENV = ("GIT_DIR", "GIT_WORK_TREE", "GIT_COMMON_DIR", "GIT_INDEX_FILE")
#: Tracked ("H path") and untracked ("? path") files of the whole work tree.
_LISTING = ("ls-files", "-z", "-t", "-c", "-o", "--exclude-standard")

#: (mtime ns, ctime ns, size, inode, device, mode) of a path, or None when it does not exist.
_Stamp = tuple[int, int, int, int, int, int] | None


@dataclass(frozen=True)
class GitState:
    """Where a run's code came from.

    Attributes:
        commit: the commit checked out (``HEAD``).
        dirty: whether anything differs from it (tracked changes or untracked files).
        diff_digest: BLAKE3 of ``git diff HEAD`` and the untracked files; None when clean.
    """

    commit: str
    dirty: bool
    diff_digest: str | None


@dataclass(frozen=True)
class _Repo:
    """A repository as found by walking up from a directory: no git process involved."""

    top: str  # the work tree's root
    git_dir: str  # its .git folder (a linked worktree's own folder under the main one)
    common_dir: str  # where refs, config and objects live (git_dir unless a linked worktree)


@dataclass
class _Entry:
    repo: _Repo
    env: tuple[tuple[str, str], ...]
    paths: list[str]
    stamps: list[_Stamp]
    state: GitState | None


def _stamp(path: str) -> _Stamp:
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino, st.st_dev, st.st_mode)


def _stamps(paths: Iterable[str]) -> list[_Stamp]:
    return [_stamp(p) for p in paths]


def _git_env() -> tuple[tuple[str, str], ...]:
    # Any GIT_* variable may change git's answer (GIT_CONFIG_*, GIT_CEILING_DIRECTORIES …).
    # Keys first: decoding every value of the environment costs more than the rest of a hit.
    return tuple(sorted((k, os.environ[k]) for k in os.environ if k[:4] == "GIT_"))


def _run(args: Sequence[str], cwd: str, ok: tuple[int, ...] = (0,)) -> bytes | None:
    """``git <args>`` in ``cwd``: its output, or None when git fails or is not installed."""
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode in ok else None


def _find_repo(start: str) -> _Repo | bool | None:
    """The repository containing ``start``, found with ``stat`` calls only.

    Returns None when no ancestor holds a ``.git`` (nor looks like a bare
    repository), and False when git may still see a repository this walk
    cannot describe (a bare one, ``GIT_DIR`` set, a ``.git`` file it cannot read).
    """
    if any(name in os.environ for name in _RELOCATING_ENV):
        return False
    here = start
    while True:
        dot_git = os.path.join(here, ".git")
        try:
            st = os.stat(dot_git)
        except OSError:
            st = None
        if st is not None and stat.S_ISDIR(st.st_mode):
            return _Repo(here, dot_git, _common_dir(dot_git))
        if st is not None:  # a linked worktree or submodule: "gitdir: <path>"
            try:
                text = Path(dot_git).read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError):
                return False
            if not text.startswith("gitdir:"):
                return False
            git_dir = os.path.realpath(os.path.join(here, text[len("gitdir:") :].strip()))
            return _Repo(here, git_dir, _common_dir(git_dir))
        if os.path.isfile(os.path.join(here, "HEAD")):
            return False  # perhaps inside a bare repository or a .git folder: ask git
        parent = os.path.dirname(here)
        if parent == here:
            return None
        here = parent


def _common_dir(git_dir: str) -> str:
    try:
        text = Path(git_dir, "commondir").read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return git_dir
    return os.path.realpath(os.path.join(git_dir, text))


def _repo_files(repo: _Repo, excludes_file: str | None) -> list[str]:
    """The files of the repository and the user's whose change may change the answer."""
    home = os.path.expanduser("~")
    xdg = os.environ.get("XDG_CONFIG_HOME") or os.path.join(home, ".config")
    files = [
        os.path.join(repo.git_dir, "HEAD"),
        os.path.join(repo.git_dir, "index"),
        os.path.join(repo.git_dir, "config.worktree"),
        os.path.join(repo.common_dir, "packed-refs"),
        os.path.join(repo.common_dir, "config"),
        os.path.join(repo.common_dir, "info", "exclude"),
        os.path.join(home, ".gitconfig"),
        os.path.join(xdg, "git", "config"),
        os.path.join(xdg, "git", "ignore"),
        "/etc/gitconfig",
    ]
    try:
        head = Path(repo.git_dir, "HEAD").read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        head = ""
    if head.startswith("ref:"):
        ref = head[len("ref:") :].strip()
        files += [os.path.join(repo.common_dir, ref), os.path.join(repo.git_dir, ref)]
    if excludes_file:
        files.append(os.path.join(repo.top, os.path.expanduser(excludes_file)))
    return files


def _ignores_everything(gitignore: str) -> bool:
    """Whether a ``.gitignore`` holds the single rule ``*`` (Keel writes one in its home)."""
    try:
        text = Path(gitignore).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    rules = [
        line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")
    ]
    return rules == ["*"]


def _parse_listing(raw: bytes) -> tuple[list[str], list[str]]:
    """Tracked and untracked paths from ``ls-files -z -t -c -o`` (relative, ``/``-separated)."""
    tracked: list[str] = []
    untracked: list[str] = []
    for item in raw.split(b"\0"):
        if len(item) < 3:
            continue
        path = os.fsdecode(item[2:])
        (untracked if item[:1] == b"?" else tracked).append(path)
    return tracked, untracked


def _walk_dirs(top: str, skip: set[str]) -> tuple[list[str], list[str]]:
    """Directories of the work tree git looks into, and the ``.gitignore`` files in them.

    ``skip`` holds directories (relative, ``/``-separated) an ignore rule matches.
    """
    dirs: list[str] = []
    gitignores: list[str] = []
    pending = [(top, "")]
    while pending:
        path, rel = pending.pop()
        dirs.append(path)
        try:
            entries = list(os.scandir(path))
        except OSError:
            continue
        names = {e.name for e in entries}
        if ".gitignore" in names:
            gitignores.append(os.path.join(path, ".gitignore"))
        for entry in entries:
            if entry.name == ".git" or not entry.is_dir(follow_symlinks=False):
                continue
            child_rel = f"{rel}{entry.name}"
            if child_rel in skip:
                continue
            child = entry.path
            if os.path.lexists(os.path.join(child, ".git")):
                continue  # a nested repository: git lists it as one path, never looks inside
            child_ignore = os.path.join(child, ".gitignore")
            if _ignores_everything(child_ignore):
                # Nothing below can count while this rule stands, whatever comes and goes
                # there (a Keel home's database and artifacts); an edit to it must be seen.
                gitignores.append(child_ignore)
                continue
            pending.append((child, child_rel + "/"))
    return dirs, gitignores


def _digest(top: str, diff: bytes, untracked: Sequence[str]) -> str | None:
    """BLAKE3 of the diff and the untracked files (path and contents); None when both are empty."""
    if not diff and not untracked:
        return None
    hasher = blake3.blake3()
    hasher.update(diff)
    for rel in sorted(untracked, key=os.fsencode):
        path = os.path.join(top, rel)
        hasher.update(b"\0untracked\0" + os.fsencode(rel) + b"\0")
        try:
            st = os.stat(path)
            if st.st_size <= _UNTRACKED_CONTENT_LIMIT:
                hasher.update(Path(path).read_bytes())
            else:
                hasher.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
        except OSError:
            continue
    return hasher.hexdigest()


def _racy(stamps: Iterable[_Stamp], since_ns: int) -> bool:
    return any(s is not None and max(s[0], s[1]) >= since_ns for s in stamps)


class GitCapture:
    """Captures :class:`GitState`, reusing the last answer while nothing it depends on changed.

    One instance, :data:`git_capture`, serves the process through :func:`capture_git`.
    See the module docstring for what is compared and when git is asked again.

    Args:
        racy_window_ns: changes this recent at capture time keep the answer out of the cache.

    Attributes:
        hits: captures answered from the cache.
        misses: captures that asked git.
    """

    def __init__(self, racy_window_ns: int = RACY_WINDOW_NS) -> None:
        self.racy_window_ns = racy_window_ns
        self.hits = 0
        self.misses = 0
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.Lock()

    def __call__(self, cwd: str | os.PathLike[str] | None = None) -> GitState | None:
        """The commit checked out at ``cwd`` (default: the working directory) and its changes.

        Returns None outside a git work tree, in a repository without commits,
        or when git is not installed.
        """
        where = os.path.realpath(os.fspath(cwd) if cwd is not None else os.getcwd())
        repo = _find_repo(where)
        if repo is None:
            return None
        if repo is False:
            with self._lock:
                self.misses += 1
            return _ask_git(where)
        assert isinstance(repo, _Repo)
        env = _git_env()
        with self._lock:
            entry = self._entries.get(where)
        if (
            entry is not None
            and entry.repo == repo
            and entry.env == env
            and _stamps(entry.paths) == entry.stamps
        ):
            with self._lock:
                self.hits += 1
            return entry.state
        with self._lock:
            self.misses += 1
        state, fresh = self._capture(where, repo, env)
        with self._lock:
            self._entries.pop(where, None)
            if fresh is not None:
                self._entries[where] = fresh  # newest last: the oldest goes first
                while len(self._entries) > MAX_ENTRIES:
                    del self._entries[next(iter(self._entries))]
        return state

    def clear(self) -> None:
        """Forget every cached answer."""
        with self._lock:
            self._entries.clear()

    def _capture(
        self, where: str, repo: _Repo, env: tuple[tuple[str, str], ...]
    ) -> tuple[GitState | None, _Entry | None]:
        """Ask git, and return the answer with a cache entry when it may be reused."""
        if shutil.which("git") is None:
            return None, None
        since = time.time_ns() - self.racy_window_ns
        where_git = _run(["rev-parse", "--show-toplevel", "--absolute-git-dir"], where)
        if where_git is None:
            return _ask_git(where), None
        lines = where_git.decode(errors="surrogateescape").splitlines()
        if (
            len(lines) != 2
            or os.path.realpath(lines[0]) != repo.top
            or os.path.realpath(lines[1]) != os.path.realpath(repo.git_dir)
            or os.path.exists(os.path.join(repo.common_dir, "reftable"))
            or os.path.lexists(os.path.join(repo.top, ".gitmodules"))
        ):
            return _ask_git(where), None
        before = _run(_LISTING, repo.top)
        ignored = _run(
            ["ls-files", "-z", "-o", "-i", "--exclude-standard", "--directory"], repo.top
        )
        excludes = _run(["config", "--path", "--get", "core.excludesFile"], repo.top, ok=(0, 1))
        if before is None or ignored is None:
            return _ask_git(where), None
        tracked, untracked = _parse_listing(before)
        dirs, gitignores = _walk_dirs(repo.top, self._ignored_dirs(repo.top, ignored))
        excludes_file = (excludes or b"").decode(errors="surrogateescape").strip() or None
        fixed = [*_repo_files(repo, excludes_file), *gitignores, *dirs]
        tracked_paths = [os.path.join(repo.top, p) for p in tracked]
        paths = [*fixed, *tracked_paths, *(os.path.join(repo.top, p) for p in untracked)]
        first = _stamps(paths)
        state, after = _state(repo.top, where)
        second = _stamps(paths)
        # A gitlink (a submodule's commit) is a folder among the tracked paths: its own
        # checkout can change without any stamp here changing.
        gitlink = any(
            s is not None and stat.S_ISDIR(s[5])
            for s in first[len(fixed) : len(fixed) + len(tracked_paths)]
        )
        if first != second or after != before or gitlink or _racy(first, since):
            return state, None
        return state, _Entry(repo, env, paths, first, state)

    @staticmethod
    def _ignored_dirs(top: str, listing: bytes) -> set[str]:
        """Directories an ignore rule matches as a whole (git never looks inside them).

        ``ls-files -i --directory`` also names folders that merely hold nothing
        but ignored files today (``build/`` under ``build/*.pyc``), where a new
        file would count; ``check-ignore`` keeps only those a rule matches.
        """
        candidates = [
            os.fsdecode(item[:-1])
            for item in listing.split(b"\0")
            if item.endswith(b"/") and item.strip(b"/")
        ]
        if not candidates:
            return set()
        try:
            done = subprocess.run(
                ["git", "check-ignore", "-z", "--stdin"],
                cwd=top,
                input=b"\0".join(os.fsencode(c) for c in candidates) + b"\0",
                capture_output=True,
                timeout=30,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            return set()
        if done.returncode not in (0, 1):
            return set()
        return {os.fsdecode(p).rstrip("/") for p in done.stdout.split(b"\0") if p}


def _state(top: str, where: str) -> tuple[GitState | None, bytes | None]:
    """Ask git for the commit, the diff against it and the untracked files.

    Returns the state and the ``ls-files`` listing of tracked and untracked
    files it was computed from.
    """
    head = _run(["rev-parse", "--verify", "-q", "HEAD"], where)
    listing = _run(_LISTING, top)
    if head is None:
        return None, listing  # no commit yet: None until the branch's ref appears
    diff = _run(["diff", "HEAD", "--binary", "--no-ext-diff", "--no-color"], top) or b""
    _, untracked = _parse_listing(listing or b"")
    digest = _digest(top, diff, untracked)
    state = GitState(commit=head.decode().strip(), dirty=digest is not None, diff_digest=digest)
    return state, listing


def _ask_git(where: str) -> GitState | None:
    """Ask git with no cache, wherever it finds the repository."""
    top = _run(["rev-parse", "--show-toplevel"], where)
    if top is None:
        return None
    return _state(top.decode(errors="surrogateescape").strip(), where)[0]


#: The process's capture, behind :func:`capture_git`; its ``hits`` and ``misses`` count all runs.
git_capture = GitCapture()


def _reset_lock_after_fork() -> None:
    # A child forked while another thread held the lock would wait for it forever.
    git_capture._lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_lock_after_fork)


def capture_git(cwd: str | os.PathLike[str] | None = None) -> GitState | None:
    """The commit checked out at ``cwd`` and a digest of everything not committed.

    The digest covers ``git diff HEAD`` (staged and unstaged changes to tracked
    files) and the untracked, not-ignored files of the whole work tree with
    their contents, so two runs with the same commit and digest ran the same
    code. Returns ``None`` outside a git work tree, before the first commit, or
    when git is not installed. Answers are cached while the repository is
    unchanged (see :class:`GitCapture`).
    """
    return git_capture(cwd)
