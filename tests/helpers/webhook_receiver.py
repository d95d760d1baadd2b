"""A webhook receiver on loopback, as an integrator would write one: it verifies every
request's signature with the ``standardwebhooks`` package and answers as a test scripts
it (a status, a redirect, or no answer at all for a while)."""

import json
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks import Webhook, WebhookVerificationError


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    verified_by: list[str]  # the receiver's secrets that verify it
    at: float

    @property
    def webhook_id(self) -> str:
        return self.headers.get("webhook-id", "")

    @property
    def event(self) -> dict:
        return json.loads(self.body)


@dataclass
class Answer:
    status: int = 200
    body: bytes = b"ok"
    headers: dict[str, str] = field(default_factory=dict)
    hang_s: float = 0.0  # say nothing for this long first


class Receiver:
    """``respond(received, nth)`` chooses each answer; ``nth`` counts the requests with
    the same webhook-id so far (1 for the first)."""

    def __init__(
        self,
        respond: Callable[[Received, int], Answer] | None = None,
        *,
        tls: ssl.SSLContext | None = None,
    ):
        self.secrets: list[str] = []
        self.received: list[Received] = []
        self.respond = respond or (lambda received, nth: Answer())
        self.released = threading.Event()  # ends every hang at once
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                headers = {k.lower(): v for k, v in self.headers.items()}
                received = Received(self.path, headers, body, receiver.verify(body, headers), 0)
                with receiver._lock:
                    received.at = time.monotonic()
                    receiver.received.append(received)
                    nth = sum(r.webhook_id == received.webhook_id for r in receiver.received)
                answer = receiver.respond(received, nth)
                if answer.hang_s:
                    receiver.released.wait(answer.hang_s)
                try:
                    self.send_response(answer.status)
                    for name, value in answer.headers.items():
                        self.send_header(name, value)
                    self.send_header("content-length", str(len(answer.body)))
                    self.end_headers()
                    self.wfile.write(answer.body)
                except OSError:
                    pass  # the sender gave up waiting

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.scheme = "http"
        self.server_names: list[str | None] = []  # SNI of each TLS handshake
        if tls is not None:
            tls.sni_callback = lambda sock, name, context: self.server_names.append(name)
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
            self.scheme = "https"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def verify(self, body: bytes, headers: dict[str, str]) -> list[str]:
        verified = []
        for secret in list(self.secrets):
            try:
                Webhook(secret).verify(body, headers)
                verified.append(secret)
            except WebhookVerificationError:
                pass
        return verified

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    def url(self, path: str = "/hook") -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}{path}"

    def ids(self) -> list[str]:
        with self._lock:
            return [r.webhook_id for r in self.received]

    def wait_for(self, predicate: Callable[[list[Received]], bool], timeout: float = 20):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                received = list(self.received)
            if predicate(received):
                return received
            time.sleep(0.02)
        raise AssertionError(f"the receiver did not get what was expected: {self.received}")

    def __enter__(self) -> "Receiver":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()
