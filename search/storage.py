"""Where a study lives: memory (default), an RDB URL, or a journal file.

Optuna writes every parameter, attribute and state change of a trial as its own operation;
its journal file backend syncs the disk after each, which makes a 46-gene trial cost 50+
disk syncs. `GenerationJournal` appends under the same lock without a sync per operation
and syncs once per generation instead: a killed process loses nothing that was written (the
operating system has it), a power loss at most the last generation, and the file stays the
plain Optuna journal every Optuna tool reads. SQLite runs in WAL mode for the same reason.
"""

from __future__ import annotations

import json
import os
import sqlite3
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage
from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock, JournalStorage

JOURNAL_SUFFIXES = (".log", ".journal", ".jsonl")


class GenerationJournal(JournalFileBackend):
    """Optuna's journal file, synced to disk by `sync()` (once per generation), not per write."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = str(path)
        self.lock = JournalFileSymlinkLock(self.path)
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
    if text.startswith("sqlite:///") and text != "sqlite:///:memory:":
        return sqlite_storage(text)
    if "://" in text:
        return optuna.storages.RDBStorage(text)
    if text.startswith("journal:") or text.endswith(JOURNAL_SUFFIXES):
        path = Path(text.removeprefix("journal:"))
        path.parent.mkdir(parents=True, exist_ok=True)
        return GenerationJournalStorage(path)
    raise ValueError(
        f"storage = {text!r} is not allowed; use an RDB URL (sqlite:///search.db) or a journal file "
        f"(a path ending in {', '.join(JOURNAL_SUFFIXES)}, or journal:<path>)"
    )


class _FileLock:
    """A cross-process lock (symlink creation, also safe on NFS) as a context manager."""

    def __init__(self, path: str) -> None:
        self.lock = JournalFileSymlinkLock(path, grace_period=120)

    def __enter__(self) -> None:
        self.lock.acquire()

    def __exit__(self, *exc: object) -> None:
        self.lock.release()


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
    return nullcontext() if path is None else _FileLock(path + ".claims")


def sync(storage: BaseStorage | None) -> None:
    """Make what a generation wrote durable (journal files; other storages sync themselves)."""
    if isinstance(storage, GenerationJournalStorage):
        storage.sync()
