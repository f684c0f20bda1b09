"""A throw-away PostgreSQL server for the tests: Debian's `postgresql` binaries, a temporary
data folder, loopback only, stopped afterwards. PostgreSQL refuses to run as root, so as
root it runs as an unprivileged account (postgres, else nobody)."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def _bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Postgres:
    """start() -> SQLAlchemy URL (psycopg 3); stop() removes everything."""

    def __init__(self):
        self.initdb, self.pg_ctl = _bin("initdb"), _bin("pg_ctl")
        self.dir: Path | None = None
        self.user = self.group = None

    def why_not(self) -> str | None:
        if not (self.initdb and self.pg_ctl):
            return "PostgreSQL is not installed (apt-get install postgresql)"
        try:
            import psycopg  # noqa: F401
        except ImportError:
            return "psycopg is not installed (pip install 'mnistlab[sweep]')"
        return None

    def _run(self, *args, **kw):
        return subprocess.run(
            args, user=self.user, group=self.group, capture_output=True, text=True, check=True, timeout=120, **kw
        )

    def start(self) -> str:
        self.dir = Path(tempfile.mkdtemp(prefix="mnistlab-pg-"))
        if os.geteuid() == 0:
            account = next((a for a in ("postgres", "nobody") if _has_user(a)), None)
            if account is None:
                raise RuntimeError("running as root and no unprivileged account to run PostgreSQL as")
            pw = pwd.getpwnam(account)
            self.user, self.group = pw.pw_uid, pw.pw_gid
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        data, port = self.dir / "data", _free_port()
        self._run(self.initdb, "-D", str(data), "-U", "mnistlab", "--auth=trust", "-E", "UTF8", "--no-sync")
        opts = f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories={self.dir} -c fsync=off"
        self._run(self.pg_ctl, "-D", str(data), "-o", opts, "-l", str(self.dir / "log"), "-w", "-t", "60", "start")
        self.url = f"postgresql+psycopg://mnistlab@127.0.0.1:{port}/postgres"
        deadline = time.monotonic() + 30
        import psycopg

        while True:
            try:
                psycopg.connect(f"host=127.0.0.1 port={port} user=mnistlab dbname=postgres").close()
                return self.url
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)

    def stop(self) -> None:
        if self.dir is None:
            return
        try:
            self._run(self.pg_ctl, "-D", str(self.dir / "data"), "-m", "immediate", "-w", "stop")
        except (subprocess.SubprocessError, OSError):
            pass
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir = None


def _has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False
