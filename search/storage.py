"""Where a study lives: storage URLs and journal files, their crash repair, and the driver lock.

A study must survive the night, so this module owns the three ways storage loses trials:
- a torn journal tail (disk full, power loss, a kill during a write) is cut back to the last
  complete record on open, after a copy of the file is kept aside;
- a write that fails for lack of space stops the study with ``error: storage: ...`` instead of
  a traceback (the records written before it are intact, so a resume loses nothing);
- two drivers on one storage file would fail each other's running trials, so a driver holds a
  lock beside the storage (journal or SQLite file) and a second one is refused with the holder
  named. A database server (PostgreSQL, MySQL) is the storage several drivers share: it gets
  Optuna heartbeats instead of a lock, see ``search.shared``.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import socket
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from blis.errors import ConfigError

JOURNAL_NAME = "study.journal"
#: seconds between heartbeats of a trial in a shared (database) storage
HEARTBEAT_S = 10.0
#: a trial whose driver has not beaten for this many heartbeats is failed and re-enqueued
GRACE_BEATS = 3
#: seconds a database server may take to accept the connection before it is called unreachable
CONNECT_TIMEOUT_S = 5
_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


@dataclass(frozen=True)
class StorageTarget:
    """A resolved storage: an Optuna URL, or an absolute journal-file path (``url`` is None)."""

    url: str | None = None
    journal: Path | None = None

    @property
    def where(self) -> str:
        """What is recorded in ``search.json`` and printed: absolute, so it works from any directory."""
        return self.url if self.url is not None else str(self.journal)

    @property
    def local_file(self) -> Path | None:
        """The file the study is in, when it is one on this machine (journal or SQLite)."""
        if self.journal is not None:
            return self.journal
        path = self.url[len("sqlite:///"):] if self.url.startswith("sqlite:///") else ""
        if path and path != ":memory:":
            return Path(path)
        return None

    @property
    def shared(self) -> bool:
        """A database server several drivers (on several machines) may use at once."""
        return self.url is not None and not self.url.startswith("sqlite")


def resolve_storage(storage: str | None, out_dir: Path) -> StorageTarget:
    """``storage`` as given on the command line (or None: the journal in ``out_dir``), made absolute."""
    if not storage:
        return StorageTarget(journal=(out_dir / JOURNAL_NAME).resolve())
    if "://" not in storage:
        return StorageTarget(journal=Path(storage).expanduser().resolve())
    path = storage[len("sqlite:///"):] if storage.startswith("sqlite:///") else ""
    if path and path != ":memory:" and not path.startswith("/"):
        return StorageTarget(url="sqlite:///" + str(Path(path).resolve()))
    return StorageTarget(url=storage)


def open_storage(target: StorageTarget, heartbeat_s: float = HEARTBEAT_S):
    """The Optuna storage of ``target``; a journal is repaired first (see ``repair_journal``)."""
    if target.shared:
        return _open_database(target.url, heartbeat_s)
    if target.url is not None:
        return target.url
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    with space_errors(target):
        target.journal.parent.mkdir(parents=True, exist_ok=True)
        repair_journal(target.journal)
        return JournalStorage(JournalFileBackend(str(target.journal)))


def _open_database(url: str, heartbeat_s: float):
    """RDB storage with heartbeats; an unreachable server or bad URL is one ``storage`` line, fast."""
    import warnings

    import sqlalchemy.exc
    from optuna.exceptions import ExperimentalWarning
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    try:
        shown = sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except sqlalchemy.exc.ArgumentError:
        raise ConfigError("storage", f"{url!r} is not a storage URL (e.g. postgresql://user:pass@host/db)") from None
    engine = {"connect_args": {"connect_timeout": CONNECT_TIMEOUT_S}} if url.startswith(("postgresql", "mysql")) else {}
    def connect():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)
            # max_retry=None: a trial is retried however often its drivers die; the simulator
            # is deterministic, so what failed a trial is never its parameters.
            return RDBStorage(url, engine_kwargs=engine, heartbeat_interval=max(1, round(heartbeat_s)),
                              grace_period=max(1, round(GRACE_BEATS * heartbeat_s)),
                              heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=None))

    try:
        try:
            return connect()
        except sqlalchemy.exc.IntegrityError:
            # Two drivers creating Optuna's tables in a new database at once: the loser's
            # CREATE collides with the winner's; the tables exist now, so connect again.
            time.sleep(1)
            return connect()
    except ImportError as e:
        raise ConfigError("storage", f"{shown}: the database driver is not installed ({e}); "
                          "for PostgreSQL: pip install 'blis[postgres]'") from None
    except sqlalchemy.exc.SQLAlchemyError as e:
        detail = str(getattr(e, "orig", None) or e).strip().splitlines()
        raise ConfigError("storage", f"cannot open {shown}: {detail[0] if detail else type(e).__name__}") from None


def repair_journal(path: Path) -> int:
    """Cut a torn tail off a journal file; return the number of bytes cut (0: file was sound).

    A record is one JSON line ending in a newline. Everything from the first record that is
    not one (a partial write, or a later record appended onto it) is moved out of the file:
    the whole original is copied to ``<name>.torn-<unix time>`` first, so nothing is destroyed.
    Records after a bad one cannot be kept: Optuna replays the journal by record number.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return 0
    good = 0
    while good < len(data):
        end = data.find(b"\n", good)
        if end < 0 or not _is_record(data[good:end]):
            break
        good = end + 1
    if good == len(data):
        return 0
    copy = path.with_name(f"{path.name}.torn-{int(time.time())}")
    shutil.copyfile(path, copy)
    with open(path, "r+b") as fh:
        fh.truncate(good)
        fh.flush()
        os.fsync(fh.fileno())
    cut = len(data) - good
    print(f"storage: {path}: cut a torn tail of {cut} bytes back to the last complete record "
          f"(original kept as {copy.name})", file=sys.stderr)
    return cut


def _is_record(line: bytes) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


def is_space_error(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in _SPACE_ERRNOS


@contextmanager
def space_errors(target: StorageTarget):
    """Turn a failed write for lack of space into ``error: storage: ...`` (exit 2)."""
    try:
        yield
    except OSError as e:
        if not is_space_error(e):
            raise
        raise ConfigError(
            "storage", f"cannot write {target.where}: {os.strerror(e.errno)}; "
            "free some space and re-run the same command to resume (completed trials are kept)"
        ) from None


@contextmanager
def exclusive(lock_path: Path, what: str, field: str, holder: dict):
    """Hold ``lock_path`` (flock) for the block; a second holder is refused, the first one named.

    flock is released by the kernel when the holder dies, so a SIGKILLed driver leaves no stale
    lock behind; the holder's description is only read to word the refusal.
    """
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            raise ConfigError(field, f"another blis search is using {what} ({_describe(fh.read())})") from None
        fh.seek(0)
        fh.truncate()
        fh.write(json.dumps(holder) + "\n")
        fh.flush()
        try:
            yield
        finally:
            fh.seek(0)
            fh.truncate()


def holder_info(out_dir: Path) -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(), "out": str(out_dir.resolve()),
            "since": time.strftime("%Y-%m-%d %H:%M:%S")}


def _describe(text: str) -> str:
    try:
        h = json.loads(text)
        return f"pid {h['pid']} on {h['host']}, --out {h['out']}, since {h['since']}"
    except (ValueError, KeyError, TypeError):
        return "holder unknown"


@contextmanager
def driver_locks(target: StorageTarget, out_dir: Path):
    """One driver per output directory and per storage file."""
    holder = holder_info(out_dir)
    with exclusive(out_dir / ".driver.lock", str(out_dir), "out", holder):
        local = target.local_file
        if local is None:
            yield
            return
        with exclusive(local.with_name(local.name + ".driver.lock"), str(local), "storage", holder):
            if target.journal is not None:
                # Only the lock holder writes this journal, so Optuna's own write lock, if a
                # SIGKILLed driver left it, is stale: drop it instead of waiting 30 s for it.
                target.journal.with_name(target.journal.name + ".lock").unlink(missing_ok=True)
            yield


def quiet_optuna() -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
