"""A throwaway PostgreSQL cluster for benchmarks (the pattern of scripts/test.sh): initdb + pg_ctl from the
newest /usr/lib/postgresql/*/bin (as the ``postgres`` user via ``runuser`` when we are root), a temporary
directory, a free port, fsync off. Stopped (immediate) and deleted on exit.

    with throwaway_cluster() as url:   # "postgresql+psycopg2://postgres@127.0.0.1:PORT/postgres"
        ...

Raises ``ClusterUnavailable`` (with the reason) when no cluster can be started.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class ClusterUnavailable(RuntimeError):
    pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pg_bin() -> Path:
    def version(path: str) -> tuple[int, ...]:
        return tuple(int(x) for x in Path(path).parts[4].split(".") if x.isdigit())

    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=version)
    if not found:
        raise ClusterUnavailable("no /usr/lib/postgresql/*/bin/initdb (Debian package postgresql not installed)")
    return Path(found[-1]).parent


@contextmanager
def throwaway_cluster(*, settings: dict[str, str] | None = None) -> Iterator[str]:
    pg_bin = _pg_bin()
    root = Path(tempfile.mkdtemp(prefix="adg-bench-pg."))
    os.chmod(root, 0o755)
    run_as: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        run_as = ["runuser", "-u", "postgres", "--"]
    port = _free_port()
    options = {
        "listen_addresses": "127.0.0.1",
        "fsync": "off",
        "synchronous_commit": "off",
        "full_page_writes": "off",
        "shared_buffers": "256MB",
        "work_mem": "32MB",
        "maintenance_work_mem": "256MB",
        "max_wal_size": "2GB",
        "jit": "off",  # JIT compile time dominates short queries; the app does not configure it either way
    } | (settings or {})
    opts = f"-p {port} -k {root} " + " ".join(f"-c {k}={v}" for k, v in options.items())
    pg_ctl = [*run_as, str(pg_bin / "pg_ctl"), "-D", str(root / "data"), "-l", str(root / "log"), "-w", "-o", opts]
    started = False
    try:
        init = subprocess.run([*run_as, str(pg_bin / "initdb"), "-D", str(root / "data"), "-A", "trust", "-U",
                               "postgres", "-E", "UTF8", "--no-sync"], capture_output=True, text=True)
        if init.returncode:
            raise ClusterUnavailable(f"initdb failed: {(init.stderr or init.stdout).strip()[-300:]}")
        start = subprocess.run([*pg_ctl, "start"], capture_output=True, text=True)
        if start.returncode:
            log = (root / "log").read_text(errors="replace")[-300:] if (root / "log").exists() else ""
            raise ClusterUnavailable(f"pg_ctl start failed: {(start.stderr or start.stdout).strip()[-200:]} {log}")
        started = True
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/postgres"
    finally:
        if started:
            subprocess.run([*pg_ctl, "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)
