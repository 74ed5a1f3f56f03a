"""SQLite (WAL) implementation of `StateStore`: the embedded default.

One connection guarded by a lock (SQLite serialises writers anyway); `synchronous=NORMAL` in WAL
mode keeps every committed transaction across a process crash (only an OS crash may lose the
last ones). Every method is one transaction.

WAL checkpoints (copying the log back into the database, with an fsync) are off the request
path: SQLite's automatic checkpoint would run inside whichever commit crosses 1000 WAL pages and
stall it for ~10-20 ms; here it is disabled on the serving connection and a background thread
runs a PASSIVE checkpoint (never blocks writers or readers) on its own connection every
`checkpoint_s` seconds. A PASSIVE checkpoint that cannot finish (a reader holds an old snapshot)
leaves the rest for the next round; the WAL is checkpointed and removed on close.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import threading
from collections.abc import Iterable
from pathlib import Path

from ..domain import Gate, Job, JobEvent, JobKind, JobState, Schedule, ScheduleMode, now
from ..errors import AlreadyExists, NotFound
from .base import StateStore

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL UNIQUE,
    request_id TEXT NOT NULL DEFAULT '',
    kind TEXT NOT NULL,
    state TEXT NOT NULL,
    family TEXT NOT NULL DEFAULT '',
    task TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    adapter_id TEXT NOT NULL DEFAULT '',
    error TEXT NOT NULL DEFAULT '',
    attempts INTEGER NOT NULL DEFAULT 0,
    event_count INTEGER NOT NULL DEFAULT 0,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    spec TEXT NOT NULL DEFAULT '{}',
    progress TEXT NOT NULL DEFAULT '{}',
    metrics TEXT NOT NULL DEFAULT '{}',
    result TEXT NOT NULL DEFAULT '{}'
);
CREATE UNIQUE INDEX IF NOT EXISTS jobs_request ON jobs(request_id) WHERE request_id != '';
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state);
CREATE TABLE IF NOT EXISTS events (
    job_id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    time REAL NOT NULL,
    type TEXT NOT NULL,
    state TEXT,
    progress TEXT,
    message TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (job_id, idx)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS steps (
    job_id TEXT NOT NULL,
    step TEXT NOT NULL,
    result TEXT NOT NULL,
    PRIMARY KEY (job_id, step)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS schedules (
    name TEXT PRIMARY KEY,
    doc TEXT NOT NULL
) WITHOUT ROWID;
"""

_JSON_FIELDS = ("spec", "progress", "metrics", "result")
_JOB_COLS = ("job_id", "request_id", "kind", "state", "family", "task", "created_at", "updated_at",
             "started_at", "finished_at", "adapter_id", "error", "attempts", "event_count",
             "cancel_requested", *_JSON_FIELDS)


def _to_row(job: Job) -> dict:
    row = {c: getattr(job, c) for c in _JOB_COLS}
    row["kind"], row["state"] = job.kind.value, job.state.value
    row["cancel_requested"] = int(job.cancel_requested)
    for f in _JSON_FIELDS:
        row[f] = json.dumps(row[f], sort_keys=True)
    return row


def _from_row(row: sqlite3.Row) -> Job:
    d = {c: row[c] for c in _JOB_COLS}
    d["kind"], d["state"] = JobKind(d["kind"]), JobState(d["state"])
    d["cancel_requested"] = bool(d["cancel_requested"])
    for f in _JSON_FIELDS:
        d[f] = json.loads(d[f])
    return Job(**d)


def _encode_field(name: str, value: object) -> object:
    if name in _JSON_FIELDS:
        return json.dumps(value, sort_keys=True)
    if isinstance(value, (JobKind, JobState)):
        return value.value
    if isinstance(value, bool):
        return int(value)
    return value


def schedule_to_doc(s: Schedule) -> dict:
    return {"name": s.name, "cron": s.cron, "family": s.family, "mode": s.mode.value, "method": s.method,
            "spec": s.spec, "gate": {"enabled": s.gate.enabled, "max_drop": s.gate.max_drop,
                                     "metric": s.gate.metric},
            "pointer": s.pointer, "created_at": s.created_at, "last_run_at": s.last_run_at,
            "next_run_at": s.next_run_at, "last_job_id": s.last_job_id}


def schedule_from_doc(d: dict) -> Schedule:
    d = dict(d)
    d["mode"], d["gate"] = ScheduleMode(d["mode"]), Gate(**d["gate"])
    return Schedule(**d)


class SqliteState(StateStore):
    """`StateStore` in one SQLite file (WAL). `path` ':memory:' works too (tests)."""

    def __init__(self, path: str | Path, *, checkpoint_s: float = 1.0) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=30000")
        with self._lock:
            self._db.executescript(_SCHEMA)
        self._closed = threading.Event()
        self.last_checkpoint: tuple | None = None  # (busy, wal frames, frames checkpointed) of the last round
        self._checkpointer: threading.Thread | None = None
        if self.path != ":memory:" and checkpoint_s > 0:
            self._db.execute("PRAGMA wal_autocheckpoint=0")  # checkpoints run in _checkpoint_loop
            self._checkpointer = threading.Thread(target=self._checkpoint_loop, args=(checkpoint_s,), daemon=True,
                                                  name="sqlite-checkpoint")
            self._checkpointer.start()

    def _checkpoint_loop(self, every_s: float) -> None:
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        try:
            db.execute("PRAGMA busy_timeout=1000")
            while not self._closed.wait(every_s):
                try:
                    self.last_checkpoint = tuple(db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone())
                except sqlite3.Error:  # busy: the next round catches up
                    pass
        finally:
            db.close()

    # -- helpers ---------------------------------------------------------------------------
    def _tx(self):
        state = self

        class _Tx:
            def __enter__(self_inner):
                state._lock.acquire()
                state._db.execute("BEGIN IMMEDIATE")
                return state._db

            def __exit__(self_inner, exc_type, exc, tb):
                try:
                    state._db.execute("ROLLBACK" if exc_type else "COMMIT")
                finally:
                    state._lock.release()
                return False

        return _Tx()

    def _get(self, db: sqlite3.Connection, job_id: str) -> Job:
        row = db.execute(f"SELECT {','.join(_JOB_COLS)} FROM jobs WHERE job_id=?", (job_id,)).fetchone()
        if row is None:
            raise NotFound(f"job {job_id!r} not found")
        return _from_row(row)

    def _update(self, db: sqlite3.Connection, job_id: str, fields: dict) -> None:
        bad = set(fields) - set(_JOB_COLS) - {"updated_at"} | ({"job_id"} & set(fields))
        if bad:
            raise ValueError(f"unknown or read-only job fields: {sorted(bad)}")
        fields = {**fields, "updated_at": fields.get("updated_at", now())}
        sets = ",".join(f"{k}=?" for k in fields)
        cur = db.execute(f"UPDATE jobs SET {sets} WHERE job_id=?",
                         [_encode_field(k, v) for k, v in fields.items()] + [job_id])
        if cur.rowcount == 0:
            raise NotFound(f"job {job_id!r} not found")

    # -- jobs ------------------------------------------------------------------------------
    def create_job(self, job: Job, *, initial_event: bool = False) -> tuple[Job, bool]:
        if initial_event:
            job = dataclasses.replace(job, event_count=1)
        with self._tx() as db:
            if job.request_id:
                row = db.execute(f"SELECT {','.join(_JOB_COLS)} FROM jobs WHERE request_id=?",
                                 (job.request_id,)).fetchone()
                if row is not None:
                    return _from_row(row), False
            row = _to_row(job)
            try:
                db.execute(f"INSERT INTO jobs ({','.join(row)}) VALUES ({','.join('?' * len(row))})",
                           list(row.values()))
            except sqlite3.IntegrityError:
                raise AlreadyExists(f"job {job.job_id!r} already exists") from None
            if initial_event:
                db.execute("INSERT INTO events VALUES (?,?,?,?,?,?,?)",
                           (job.job_id, 0, job.created_at, "state", job.state.value, None, ""))
            return job, True

    def get_job(self, job_id: str) -> Job:
        with self._lock:
            return self._get(self._db, job_id)

    def update_job(self, job_id: str, **fields: object) -> Job:
        with self._tx() as db:
            self._update(db, job_id, fields)
            return self._get(db, job_id)

    def list_jobs(self, states: Iterable[JobState] = (), kind: JobKind | None = None, family: str = "",
                  task: str = "", limit: int = 50, cursor: int | None = None) -> tuple[list[Job], int | None]:
        where, args = [], []
        states = [JobState(s).value for s in states]
        if states:
            where.append(f"state IN ({','.join('?' * len(states))})")
            args += states
        for col, val in (("kind", kind.value if kind else ""), ("family", family), ("task", task)):
            if val:
                where.append(f"{col}=?")
                args.append(val)
        if cursor is not None:
            where.append("seq<?")
            args.append(cursor)
        sql = f"SELECT seq,{','.join(_JOB_COLS)} FROM jobs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY seq DESC LIMIT ?"
        with self._lock:
            rows = self._db.execute(sql, args + [limit + 1]).fetchall()
        more = len(rows) > limit
        rows = rows[:limit]
        return [_from_row(r) for r in rows], (rows[-1]["seq"] if more and rows else None)

    def active_jobs(self) -> list[Job]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT {','.join(_JOB_COLS)} FROM jobs WHERE state IN (?,?) ORDER BY seq",
                (JobState.QUEUED.value, JobState.RUNNING.value)).fetchall()
        return [_from_row(r) for r in rows]

    # -- events ----------------------------------------------------------------------------
    def append_event(self, job_id: str, type: str, *, state: JobState | None = None,
                     progress: dict | None = None, message: str = "", job_fields: dict | None = None) -> JobEvent:
        with self._tx() as db:
            row = db.execute("SELECT event_count FROM jobs WHERE job_id=?", (job_id,)).fetchone()
            if row is None:
                raise NotFound(f"job {job_id!r} not found")
            ev = JobEvent(job_id, row[0], now(), type, state, progress, message)
            db.execute("INSERT INTO events VALUES (?,?,?,?,?,?,?)",
                       (job_id, ev.index, ev.time, type, state.value if state else None,
                        json.dumps(progress) if progress is not None else None, message))
            self._update(db, job_id, {**(job_fields or {}), "event_count": ev.index + 1})
            return ev

    def events(self, job_id: str, from_index: int = 0, limit: int = 1000) -> list[JobEvent]:
        with self._lock:
            if self._db.execute("SELECT 1 FROM jobs WHERE job_id=?", (job_id,)).fetchone() is None:
                raise NotFound(f"job {job_id!r} not found")
            rows = self._db.execute(
                "SELECT idx,time,type,state,progress,message FROM events WHERE job_id=? AND idx>=? "
                "ORDER BY idx LIMIT ?", (job_id, max(0, from_index), limit)).fetchall()
        return [JobEvent(job_id, r[0], r[1], r[2], JobState(r[3]) if r[3] else None,
                         json.loads(r[4]) if r[4] is not None else None, r[5]) for r in rows]

    # -- steps -----------------------------------------------------------------------------
    def put_step(self, job_id: str, step: str, result: dict) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO steps VALUES (?,?,?)", (job_id, step, json.dumps(result)))

    def get_step(self, job_id: str, step: str) -> dict | None:
        with self._lock:
            row = self._db.execute("SELECT result FROM steps WHERE job_id=? AND step=?", (job_id, step)).fetchone()
        return None if row is None else json.loads(row[0])

    # -- schedules -------------------------------------------------------------------------
    def create_schedule(self, schedule: Schedule) -> Schedule:
        with self._tx() as db:
            try:
                db.execute("INSERT INTO schedules VALUES (?,?)",
                           (schedule.name, json.dumps(schedule_to_doc(schedule))))
            except sqlite3.IntegrityError:
                raise AlreadyExists(f"schedule {schedule.name!r} already exists") from None
        return schedule

    def get_schedule(self, name: str) -> Schedule:
        with self._lock:
            row = self._db.execute("SELECT doc FROM schedules WHERE name=?", (name,)).fetchone()
        if row is None:
            raise NotFound(f"schedule {name!r} not found")
        return schedule_from_doc(json.loads(row[0]))

    def list_schedules(self, family: str = "") -> list[Schedule]:
        with self._lock:
            rows = self._db.execute("SELECT doc FROM schedules ORDER BY name").fetchall()
        out = [schedule_from_doc(json.loads(r[0])) for r in rows]
        return [s for s in out if not family or s.family == family]

    def update_schedule(self, name: str, **fields: object) -> Schedule:
        with self._tx() as db:
            row = db.execute("SELECT doc FROM schedules WHERE name=?", (name,)).fetchone()
            if row is None:
                raise NotFound(f"schedule {name!r} not found")
            doc = schedule_to_doc(schedule_from_doc(json.loads(row[0])))
            current = schedule_from_doc(doc)
            for k, v in fields.items():
                if not hasattr(current, k) or k == "name":
                    raise ValueError(f"unknown or read-only schedule field {k!r}")
                setattr(current, k, v)
            db.execute("UPDATE schedules SET doc=? WHERE name=?", (json.dumps(schedule_to_doc(current)), name))
            return current

    def delete_schedule(self, name: str) -> bool:
        with self._tx() as db:
            return db.execute("DELETE FROM schedules WHERE name=?", (name,)).rowcount > 0

    def close(self) -> None:
        self._closed.set()
        if self._checkpointer is not None:
            self._checkpointer.join(5)
        with self._lock:
            self._db.close()  # the last connection to close checkpoints the WAL fully
