"""Faults for the evidence tests: a throwaway PostgreSQL to stop and start, a loopback TCP proxy
to cut, a store backend to terminate, and a delete step in a worker process to kill.

Nothing here touches the shared database servers beyond the tables a test names: the control
database that is stopped is an instance of our own (initdb in a temporary folder, a free port),
and the only backends terminated are those whose last statement names the test's own table.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa

PG_BIN = Path(os.environ.get("LIFECYCLE_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))
PROJECT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def airflow_connection(url: str | sa.URL) -> str:
    """An Airflow connection (JSON form) to a PostgreSQL database given as a SQLAlchemy URL."""
    url = sa.make_url(url)
    return json.dumps(
        {
            "conn_type": "postgres",
            "host": url.host,
            "port": url.port or 5432,
            "login": url.username,
            "password": url.password,
            "schema": url.database,
        }
    )


def wait_until(condition, *, timeout: float = 30.0, what: str = "condition", every=0.01):
    """Poll `condition` until it returns something truthy (returned), at most `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not reached within {timeout} s")
        time.sleep(every)


# -- a throwaway PostgreSQL ----------------------------------------------------------------------


class ThrowawayPostgres:
    """A PostgreSQL cluster of its own in a temporary folder, on a free loopback port, that a
    test may stop (`-m immediate`: a crash) and start again on the same port."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="lifecycle-faults-pg-"))
        self.data = self.root / "data"
        self.logfile = self.root / "postgres.log"
        self.port = free_port()
        # initdb and postgres refuse to run as root: as the `postgres` account then.
        self._as: dict[str, Any] = {}
        if os.geteuid() == 0:
            account = pwd.getpwnam("postgres")
            os.chown(self.root, account.pw_uid, account.pw_gid)
            self._as = {"user": account.pw_uid, "group": account.pw_gid}
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-sync",
            "--no-instructions",
        )
        # fsync off: an immediate stop is a crash of PostgreSQL, not of the machine, so every
        # commit still survives it (synchronous_commit stays on: a commit is in the WAL).
        with (self.data / "postgresql.conf").open("a", encoding="utf-8") as conf:
            conf.write(
                f"\nlisten_addresses = '127.0.0.1'\nport = {self.port}\n"
                f"unix_socket_directories = '{self.root}'\nfsync = off\n"
                "full_page_writes = off\nshared_buffers = 16MB\nmax_connections = 50\n"
            )

    def _run(self, program: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run(
            [str(PG_BIN / program), *args],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=self.root,
            **self._as,
        )
        if check and done.returncode != 0:
            log = self.logfile.read_text()[-2000:] if self.logfile.exists() else ""
            raise RuntimeError(f"{program} failed: {done.stdout}{done.stderr}{log}")
        return done

    @property
    def url(self) -> sa.URL:
        return sa.URL.create(
            "postgresql+psycopg",
            username="postgres",
            host="127.0.0.1",
            port=self.port,
            database="postgres",
        )

    def airflow_connection(self) -> str:
        return airflow_connection(self.url)

    def running(self) -> bool:
        return self._run("pg_ctl", "status", "-D", str(self.data), check=False).returncode == 0

    def start(self) -> None:
        self._run(
            "pg_ctl", "start", "-w", "-t", "30", "-D", str(self.data), "-l", str(self.logfile)
        )

    def stop(self, mode: str = "immediate") -> None:
        self._run("pg_ctl", "stop", "-w", "-t", "30", "-D", str(self.data), "-m", mode)

    def ensure_running(self) -> None:
        if not self.running():
            self.start()

    def destroy(self) -> None:
        try:
            if self.running():
                self.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


# -- the store's backend ---------------------------------------------------------------------


_ON_TABLE = sa.text(
    "SELECT pid FROM pg_stat_activity WHERE pid <> pg_backend_pid() "
    "AND datname = current_database() AND backend_type = 'client backend' "
    "AND position(:table in query) > 0"
)


def backends_on(admin_url: str | sa.URL, table: str) -> list[int]:
    """The backends of other sessions whose current or last statement names `table`."""
    engine = sa.create_engine(admin_url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            return list(conn.execute(_ON_TABLE, {"table": table}).scalars())
    finally:
        engine.dispose()


def terminate(admin_url: str | sa.URL, pids: list[int]) -> list[int]:
    """pg_terminate_backend each of `pids`, waiting for it to exit: those it terminated."""
    engine = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            stop = sa.text("SELECT pg_terminate_backend(:pid, 10000)")
            return [pid for pid in pids if conn.execute(stop, {"pid": pid}).scalar()]
    finally:
        engine.dispose()


def terminate_backends_on(admin_url: str | sa.URL, table: str) -> list[int]:
    """Terminate the backends of other sessions whose current or last statement names
    `table` (the purge's connection, inside a batch)."""
    return terminate(admin_url, backends_on(admin_url, table))


# -- a loopback TCP proxy that can be cut ---------------------------------------------------


class CuttableProxy:
    """127.0.0.1:<port> forwarded to `target`. `cut()` closes the listening socket (new
    connections are refused) and every open connection; `lose_next_response()` forwards the
    next request but drops its response and cuts (the server did the work, the client never
    hears of it); `restore()` listens again on the same port."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self.connections = 0
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._lose_next = False
        self._listener: socket.socket | None = None
        self._stopping = threading.Event()
        self._acceptor: threading.Thread | None = None
        self.restore()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def open(self) -> bool:
        return self._listener is not None

    def restore(self) -> None:
        if self._listener is not None:
            return
        listener = socket.create_server(("127.0.0.1", self.port))  # SO_REUSEADDR on POSIX
        listener.settimeout(0.05)
        self.port = listener.getsockname()[1]
        self._stopping = threading.Event()
        self._listener = listener
        self._acceptor = threading.Thread(
            target=self._accept, args=(listener, self._stopping), daemon=True
        )
        self._acceptor.start()

    def _accept(self, listener: socket.socket, stopping: threading.Event) -> None:
        while not stopping.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            client.settimeout(None)
            upstream.settimeout(None)
            with self._lock:
                if stopping.is_set():
                    client.close()
                    upstream.close()
                    return
                self._sockets |= {client, upstream}
                self.connections += 1
            for source, sink, back in ((client, upstream, False), (upstream, client, True)):
                threading.Thread(target=self._pump, args=(source, sink, back), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, response: bool) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                if response:
                    with self._lock:
                        lose, self._lose_next = self._lose_next, False
                    if lose:
                        self.cut()  # the server answered; the client never gets it
                        return
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                self._close(end)

    def _close(self, end: socket.socket) -> None:
        with contextlib.suppress(OSError):
            end.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            end.close()
        with self._lock:
            self._sockets.discard(end)

    def lose_next_response(self) -> None:
        with self._lock:
            self._lose_next = True

    def cut(self) -> None:
        """Refuse new connections first, then drop the open ones: a client retrying at once
        finds nothing listening."""
        listener, self._listener = self._listener, None
        if listener is not None:
            self._stopping.set()
            if self._acceptor is not threading.current_thread():
                self._acceptor.join(timeout=5)
            listener.close()
        with self._lock:
            open_sockets = list(self._sockets)
        for end in open_sockets:
            self._close(end)

    close = cut


# -- a delete step in a worker process ----------------------------------------------------------


def start_worker(spec: dict[str, Any], log: Path) -> subprocess.Popen:
    """`steps.delete` of one slice in a child process (the task's worker), which stops dead at
    the point `spec["pause"]` names and says so on stdout, to be killed there:

    - `committed`: batch `spec["batch"]` has committed in the store, its ledger row not written;
    - `in_transaction`: the batch's rows are deleted in an open transaction, its `begin` row
      written, not committed;
    - `between`: batch `spec["batch"]` committed and in the ledger, the next one not started.
    """
    script = (
        "import sys\n"
        f"sys.path[:0] = [{str(PROJECT / 'plugins')!r}, {str(PROJECT)!r}]\n"
        "from tests.e2e.faults import worker_main\n"
        "worker_main(sys.argv[1])\n"
    )
    with log.open("w", encoding="utf-8") as errors:  # a file: a full pipe would block it
        return subprocess.Popen(
            [sys.executable, "-c", script, json.dumps(spec)],
            cwd=PROJECT,
            env=os.environ.copy(),
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
        )


def kill_worker_when_paused(spec: dict[str, Any], log: Path, check=None) -> int:
    """Start the worker, wait until it has stopped where `spec["pause"]` says, run `check` (it
    is still alive there), SIGKILL it: its exit status (always killed, whatever fails)."""
    worker = start_worker(spec, log)
    try:
        said = read_line(worker)
        if said != spec["pause"]:
            raise RuntimeError(f"the worker said {said!r}: {log.read_text()[-3000:]}")
        if check is not None:
            check()
        worker.send_signal(signal.SIGKILL)
        return worker.wait(timeout=30)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(timeout=30)
        worker.stdout.close()


def worker_main(argument: str) -> None:
    from datetime import datetime

    from lifecycle import steps
    from lifecycle.ledger import Journal
    from lifecycle.policy import Policy

    spec = json.loads(argument)
    policy = Policy.model_validate(spec["policy"])
    run = steps.Run(**{**spec["run"], "logical_date": datetime.fromisoformat(spec["logical_date"])})
    pause, at = spec["pause"], spec["batch"]
    before, after = Journal.before, Journal.after

    def stop_dead(state: str) -> None:
        print(state, flush=True)
        time.sleep(300)  # killed here
        os._exit(3)

    def paused_before(journal, batch, expected, witnesses=None):
        before(journal, batch, expected, witnesses)
        if pause == "in_transaction" and batch == at:
            stop_dead("in_transaction")

    def paused_after(journal, batch, deleted):
        if pause == "committed" and batch == at:
            stop_dead("committed")
        after(journal, batch, deleted)
        if pause == "between" and batch == at:
            stop_dead("between")

    Journal.before, Journal.after = paused_before, paused_after
    steps.delete(policy, run, spec["extracted"], spec["shard"], try_number=spec["try_number"])
    print("finished", flush=True)


def read_line(process: subprocess.Popen, timeout: float = 60.0) -> str:
    """The worker's next line on stdout, waiting at most `timeout` s (it must be alive)."""
    import selectors

    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        if not selector.select(timeout):
            raise TimeoutError(f"the worker said nothing within {timeout} s")
    line = process.stdout.readline().strip()
    if not line:
        process.wait(timeout=10)
        raise RuntimeError(f"the worker ended (exit {process.returncode}); see its log")
    return line
