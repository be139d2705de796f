"""Where a study lives (memory by default, an RDB URL, or a journal file) and who works on it.

Optuna writes every parameter, attribute and state change of a trial as its own operation;
its journal file backend syncs the disk after each, which makes a 46-gene trial cost 50+
disk syncs. `GenerationJournal` appends under the same lock without a sync per operation
and syncs once per generation instead: a killed process loses nothing that was written (the
operating system has it), a power loss at most the last generation, and the file stays the
plain Optuna journal every Optuna tool reads. SQLite runs in WAL mode for the same reason.

Workers of a stored study may die (a kill, a crash, a lost machine) with trials running.
Optuna's heartbeat (`fail_stale_trials`) covers RDB storages inside `Study.optimize` only;
the engine asks and tells, and journal files have no heartbeat. So each trial the engine
creates names its worker (`WORKER`: host, process id and process start time), and
`StaleTrials` finds the running trials of dead workers: on this host, those whose process no
longer runs (exact, at once); on another host, those whose worker's heartbeat (a study user
attribute rewritten by `Heartbeat` every `HEARTBEAT_S` seconds) has not changed for
`STALE_AFTER` seconds of watching (no clocks compared across hosts). A trial that names no
worker was killed in the instant between being created and being named (no live worker's
trial stays so longer): it is dead once every other worker known to the study is, or after
`STALE_AFTER` seconds of watching it run. (So a study is not to be shared with processes that
do not name their trials, such as a plain `Study.optimize`.)
"""

from __future__ import annotations

import errno
import json
import os
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage
from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock, JournalStorage
from optuna.trial import FrozenTrial, TrialState

JOURNAL_SUFFIXES = (".log", ".journal", ".jsonl")
WORKER = "worker"  # user attribute of every trial the engine creates: its worker (`worker_id`)
HEARTBEAT = "heartbeat:"  # study user attribute HEARTBEAT + worker id: the time of its last beat
HEARTBEAT_S = 20.0
STALE_AFTER = 300.0


class JournalLock(JournalFileSymlinkLock):  # (its public base class; the abstract one is private)
    """The journal's write lock: the link Optuna's `JournalFileSymlinkLock` makes (same file, so
    plain Optuna writers and ours exclude each other), naming its owner, so a run killed
    mid-write leaves a lock the next run on this host breaks at once instead of after Optuna's
    30 s grace period. A lock of another host's (or of plain Optuna) is still broken after 30 s."""

    def __init__(self, journal: str, grace_period: float = 30.0) -> None:
        super().__init__(journal)
        self.owned = OwnedLock(journal + ".lock", grace_period)  # the file name Optuna locks

    def acquire(self) -> bool:
        self.owned.__enter__()
        return True

    def release(self) -> None:
        self.owned.__exit__()


class GenerationJournal(JournalFileBackend):
    """Optuna's journal file, synced to disk by `sync()` (once per generation), not per write."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = str(path)
        self.lock = JournalLock(self.path)
        super().__init__(self.path, lock_obj=self.lock)

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        text = "\n".join(json.dumps(log, separators=(",", ":")) for log in logs) + "\n"
        self.lock.acquire()
        try:
            with open(self.path, "ab") as f:
                f.write(text.encode("utf-8"))
                f.flush()
        finally:
            self.lock.release()

    def sync(self) -> None:
        with open(self.path, "ab") as f:
            os.fsync(f.fileno())


class GenerationJournalStorage(JournalStorage):
    """An Optuna `JournalStorage` on a `GenerationJournal` file."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.backend = GenerationJournal(path)
        super().__init__(self.backend)

    def sync(self) -> None:
        self.backend.sync()


def sqlite_storage(url: str) -> BaseStorage:
    """SQLite in WAL mode with normal syncing (Optuna commits once per parameter)."""
    path = Path(url.removeprefix("sqlite:///"))
    path.parent.mkdir(parents=True, exist_ok=True)

    def connect() -> sqlite3.Connection:
        con = sqlite3.connect(str(path), timeout=120, check_same_thread=False)
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=NORMAL")
        return con

    return optuna.storages.RDBStorage(url, engine_kwargs={"creator": connect})


def open_storage(storage: str | os.PathLike | BaseStorage | None) -> BaseStorage | None:
    """None (in memory), an RDB URL (`sqlite:///x.db`), a journal file path (`.log`,
    `.journal`, `.jsonl`, or `journal:<path>`) or an Optuna storage object."""
    if storage is None or isinstance(storage, BaseStorage):
        return storage
    text = str(storage)
    kind = storage_kind(text)
    if kind == "sqlite":
        return sqlite_storage(text)
    if kind == "rdb":
        return optuna.storages.RDBStorage(text)
    path = Path(text.removeprefix("journal:"))
    path.parent.mkdir(parents=True, exist_ok=True)
    return GenerationJournalStorage(path)


def storage_kind(text: str) -> str:
    """`sqlite`, `rdb` or `journal` for a storage string (nothing opened); a ValueError naming
    what is allowed for anything else."""
    if text.startswith("sqlite:///") and text != "sqlite:///:memory:":
        return "sqlite"
    if "://" in text:
        return "rdb"
    if text.startswith("journal:") or text.endswith(JOURNAL_SUFFIXES):
        return "journal"
    raise ValueError(
        f"storage = {text!r} is not allowed; use an RDB URL (sqlite:///search.db) or a journal file "
        f"(a path ending in {', '.join(JOURNAL_SUFFIXES)}, or journal:<path>)"
    )


def process_start(pid: int) -> str | None:
    """The start time of process `pid` (Linux `/proc`: clock ticks after boot), which tells a
    process from a later one with the same id; "" where unknown; None when it does not run."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    except OSError:  # no /proc: only whether the process id is in use
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return ""
    fields = stat[stat.rindex(")") + 2 :].split()
    return None if fields[0] in ("Z", "X") else fields[19]  # a zombie has ended


def worker_id() -> str:
    """This process as the worker of a study: `host:pid:start`."""
    return f"{socket.gethostname()}:{os.getpid()}:{process_start(os.getpid()) or ''}"


def worker_alive(worker: str) -> bool | None:
    """Whether the process of a worker of this host still runs; None for another host's."""
    parts = str(worker).rsplit(":", 2)
    if len(parts) != 3:
        return None
    host, pid, start = parts
    if host != socket.gethostname() or not pid.isdigit():
        return None
    now = process_start(int(pid))
    return now is not None and (not start or not now or now == start)


class OwnedLock:
    """A cross-process lock (a symbolic link created atomically, also safe on NFS) as a context
    manager. The link names its owner (`worker_id`), so that a lock left by a process of this
    host that died holding it is broken at once; any other is broken after `grace_period`
    seconds unchanged, as Optuna's `JournalFileSymlinkLock` does."""

    def __init__(self, path: str, grace_period: float = 120.0) -> None:
        self.path, self.grace_period = path, grace_period

    def __enter__(self) -> None:
        me, wait, since, seen = worker_id(), 0.001, time.monotonic(), None
        while True:
            try:
                os.symlink(me, self.path)
                return
            except FileExistsError:
                pass
            try:
                owner, mtime = os.readlink(self.path), os.lstat(self.path).st_mtime
            except OSError:  # released meanwhile
                continue
            if (owner, mtime) != seen:
                seen, since = (owner, mtime), time.monotonic()
            if worker_alive(owner) is False or time.monotonic() - since > self.grace_period:
                self._break(owner)
                continue
            time.sleep(wait)
            wait = min(2 * wait, 0.1)

    def _break(self, owner: str) -> None:
        """Remove the lock of `owner` (renamed first: of two breakers, one succeeds)."""
        moved = f"{self.path}.{uuid.uuid4().hex}.broken"
        try:
            os.rename(self.path, moved)
        except OSError:
            return
        if os.readlink(moved) == owner:
            os.unlink(moved)
        else:  # another process took the lock in the meantime: give it back
            os.rename(moved, self.path)

    def __exit__(self, *exc: object) -> None:
        try:
            os.unlink(self.path)
        except OSError as err:
            if err.errno != errno.ENOENT:
                raise


def claim_lock(storage: BaseStorage | None) -> AbstractContextManager:
    """The lock under which workers of one study decide which configs they evaluate: a lock
    file beside a journal or SQLite file; none in memory (one process). Studies in other
    storages (a database server) get none: two workers may then, rarely, both evaluate a
    config that both proposed in the same instant."""
    path = None
    if isinstance(storage, GenerationJournalStorage):
        path = storage.backend.path
    elif isinstance(storage, optuna.storages.RDBStorage) and storage.url.startswith("sqlite:///"):
        path = storage.url.removeprefix("sqlite:///")
    return nullcontext() if path is None else OwnedLock(path + ".claims.lock")


def sync(storage: BaseStorage | None) -> None:
    """Make what a generation wrote durable (journal files; other storages sync themselves)."""
    if isinstance(storage, GenerationJournalStorage):
        storage.sync()


class Heartbeat:
    """This worker's heartbeat in a stored study, rewritten every `HEARTBEAT_S` seconds by a
    daemon thread while the block runs (Optuna's storages are thread-safe); nothing for a
    study in memory, which no other process sees."""

    def __init__(self, study: optuna.Study, storage: BaseStorage | None, worker: str) -> None:
        self.study, self.worker = study, worker
        self.stop = threading.Event()
        self.thread = None if storage is None else threading.Thread(target=self._beat, daemon=True)

    def _beat(self) -> None:
        while not self.stop.wait(HEARTBEAT_S):
            self.study.set_user_attr(HEARTBEAT + self.worker, time.time())

    def __enter__(self) -> Heartbeat:
        if self.thread is not None:  # the first beat before any trial: the worker is known
            self.study.set_user_attr(HEARTBEAT + self.worker, time.time())
            self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join()


class StaleTrials:
    """The running trials of dead workers (see the module's note), told failed."""

    def __init__(self, study: optuna.Study, worker: str, stale_after: float = STALE_AFTER) -> None:
        self.study, self.worker, self.stale_after = study, worker, stale_after
        self.watched: dict[str, tuple[Any, float]] = {}  # what is watched -> (last value, when it changed)
        self._verdicts: dict[str, bool] = {}  # worker -> dead, for one call of `dead`
        self._beats: dict[str, Any] = {}

    def unchanged_for(self, what: str, value: Any) -> float:
        last = self.watched.get(what)
        if last is None or last[0] != value:
            self.watched[what] = (value, time.monotonic())
            return 0.0
        return time.monotonic() - last[1]

    def dead(self, running: Sequence[FrozenTrial]) -> list[FrozenTrial]:
        """The trials of `running` whose worker is dead. A trial that names no worker is dead
        when every other worker known to the study (by its heartbeat or its running trials)
        is, or after `stale_after` seconds of watching it."""
        others = [t for t in running if t.user_attrs.get(WORKER) != self.worker]
        if not others:
            return []
        self._verdicts, self._beats = {}, self.study.user_attrs
        known = {k.removeprefix(HEARTBEAT) for k in self._beats if k.startswith(HEARTBEAT)}
        known |= {t.user_attrs[WORKER] for t in others if t.user_attrs.get(WORKER)}
        known.discard(self.worker)
        out = []
        for t in others:
            owner = t.user_attrs.get(WORKER)
            if owner is not None:
                gone = self._dead(owner)
            else:
                watched = self.unchanged_for(f"trial {t.number}", 0)
                gone = all(self._dead(w) for w in known) or watched > self.stale_after
            if gone:
                out.append(t)
        return out

    def _dead(self, worker: str) -> bool:
        if worker not in self._verdicts:
            alive = worker_alive(worker)
            if alive is None:  # another host's: its heartbeat must change within `stale_after`
                alive = self.unchanged_for(worker, self._beats.get(HEARTBEAT + worker)) <= self.stale_after
            self._verdicts[worker] = not alive
        return self._verdicts[worker]

    def fail(self, trials: Sequence[FrozenTrial]) -> None:
        for t in trials:
            self.study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
