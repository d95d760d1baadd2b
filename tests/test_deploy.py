"""The deployment: docker-compose.yml and deploy/nginx.conf describe something real.

There is no Docker engine here, so the compose file is checked against the project
(every service, command, port and variable refers to something that exists), and the
same topology — nginx in front of two daphne workers sharing the database and Redis —
is run without Docker, through the very nginx.conf the compose file mounts.
"""

import asyncio
import http.server
import json
import os
import re
import shutil
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import websockets
import yaml
from django.core.management import get_commands
from django.urls import resolve

from .helpers.protocol import WsViewer
from .helpers.servers import ROOT, Server, free_port, start_daphne, wait_for_port
from .helpers.ws import session_cookie

COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
NGINX_CONF = (ROOT / "deploy" / "nginx.conf").read_text()
LOCATIONS_CONF = (ROOT / "deploy" / "locations.conf").read_text()
TLS_CONF = (ROOT / "deploy" / "nginx-tls.conf").read_text()
TLS_COMPOSE = yaml.safe_load((ROOT / "docker-compose.tls.yml").read_text())
SETTINGS_SOURCE = (ROOT / "chatsite" / "settings.py").read_text()
SERVICES = COMPOSE["services"]


def command_of(service: dict) -> list[str]:
    command = service.get("command", [])
    return command.split() if isinstance(command, str) else command


def web_services() -> dict[str, dict]:
    return {name: s for name, s in SERVICES.items() if "serve" in command_of(s)}


def upstream_servers() -> list[str]:
    block = re.search(r"upstream chatsite \{(.*?)\}", NGINX_CONF, re.S).group(1)
    return re.findall(r"^\s*server\s+(\S+?)(?:\s|;)", block, re.M)


def test_compose_has_the_whole_topology():
    assert {"postgres", "redis", "migrate", "nginx"} <= set(SERVICES)
    assert len(web_services()) >= 2
    for name, service in SERVICES.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in SERVICES, f"{name} depends on unknown {dependency}"
        assert "healthcheck" in service or name == "migrate", f"{name} has no health check"


def test_every_command_is_a_real_management_command():
    commands = get_commands()
    for name, service in SERVICES.items():
        words = " ".join(command_of(service)).split()
        for index, word in enumerate(words):
            if word == "manage.py":
                assert words[index + 1] in commands, f"{name}: unknown command {words[index + 1]}"
    for name in web_services():
        assert "--host" in command_of(SERVICES[name])  # containers listen beyond loopback


def test_every_variable_is_a_setting_chatsite_reads():
    environment = SERVICES["web1"]["environment"]
    for variable in environment:
        assert f'"{variable}"' in SETTINGS_SOURCE, f"{variable} is not read by settings.py"
    assert environment["REDIS_URL"].startswith("redis://redis:")
    assert "@postgres:" in environment["DATABASE_URL"]
    assert environment["SERVE_STATIC"] == "0"  # nginx serves /static/


def test_nginx_sends_traffic_to_every_worker_on_its_port():
    expected = set()
    for name, service in web_services().items():
        command = command_of(service)
        expected.add(f"{name}:{command[command.index('--port') + 1]}")
    assert set(upstream_servers()) == expected


def test_health_checks_and_mounts_point_at_real_things():
    assert resolve("/healthz").url_name == "healthz"
    for volume in SERVICES["nginx"]["volumes"]:
        source = volume.split(":")[0]
        if source.startswith("./"):
            assert (ROOT / source).exists(), source
    assert (ROOT / "Dockerfile").exists()
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "manage.py" in dockerfile and "serve" in dockerfile


def test_nginx_is_configured_for_websockets_and_event_streams():
    assert "proxy_set_header Upgrade $http_upgrade" in LOCATIONS_CONF
    assert "proxy_buffering off" in LOCATIONS_CONF
    timeouts = [
        int(v) * {"s": 1, "m": 60, "h": 3600}[u]
        for v, u in re.findall(r"proxy_read_timeout\s+(\d+)([smh])", LOCATIONS_CONF)
    ]
    assert timeouts and min(timeouts) > 15  # longer than the SSE heartbeat
    gzip_types = re.search(r"gzip_types([^;]*);", LOCATIONS_CONF).group(1)
    assert "text/event-stream" not in gzip_types
    for conf in (NGINX_CONF, TLS_CONF):
        assert "include /etc/nginx/chatsite/locations.conf;" in conf


def test_the_tls_override_mounts_real_files():
    nginx = TLS_COMPOSE["services"]["nginx"]
    assert "443:443" in nginx["ports"]
    mounts = dict(volume.split(":")[:2] for volume in nginx["volumes"])
    assert mounts["./deploy/nginx-tls.conf"] == "/etc/nginx/conf.d/tls.conf"
    assert (ROOT / "deploy" / "nginx-tls.conf").exists()
    assert mounts["./deploy/certs"] == "/etc/nginx/certs"
    assert "/etc/nginx/certs/fullchain.pem" in TLS_CONF
    assert "/etc/nginx/certs/privkey.pem" in TLS_CONF


# --- health checks check health -------------------------------------------------------------


def health_commands() -> dict[str, list[str]]:
    """Each health check of the compose file that asks chatsite, as an argv to run here."""
    commands = {}
    for name, service in SERVICES.items():
        test = service.get("healthcheck", {}).get("test", [])
        if not any("/healthz" in part for part in test):
            continue
        if test[0] == "CMD-SHELL":
            commands[name] = ["sh", "-c", test[1].replace("$$", "$")]
        else:
            commands[name] = list(test[1:])
    return commands


class _Answer(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self):
        self.send_response(self.status)
        self.send_header("Location", "https://127.0.0.1/healthz")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def answering(status: int) -> http.server.HTTPServer:
    handler = type("Answer", (_Answer,), {"status": status})
    server = http.server.HTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def run_health_check(argv: list[str], port: int) -> int:
    argv = [
        re.sub(r"http://127\.0\.0\.1(:8000)?/", f"http://127.0.0.1:{port}/", part) for part in argv
    ]
    if argv[0] == "python":
        argv[0] = sys.executable
    return subprocess.run(argv, cwd=ROOT, capture_output=True, timeout=30).returncode


def test_health_checks_pass_on_200_only():
    commands = health_commands()
    assert {"web1", "web2", "nginx"} <= set(commands)
    if shutil.which("curl") is None:
        commands.pop("nginx")  # the nginx image has curl; this machine may not
    for status, healthy in ((200, True), (301, False), (302, False), (503, False)):
        server = answering(status)
        try:
            for name, argv in commands.items():
                code = run_health_check(argv, server.server_address[1])
                assert (code == 0) is healthy, f"{name} on {status}: exit {code}"
        finally:
            server.shutdown()
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert 'CMD ["python", "deploy/healthcheck.py", "http://127.0.0.1:8000/healthz"]' in dockerfile


@pytest.mark.django_db(transaction=True)
def test_with_https_on_a_worker_answers_its_health_check_over_plain_http(redis_url):
    worker = start_daphne(env={"CHAT_HTTPS": "1", "REDIS_URL": redis_url}, name="https-web")
    try:
        assert run_health_check(health_commands()["web1"], worker.port) == 0
        page = httpx.get(f"{worker.url}/login/")
        assert page.status_code == 301  # everything else goes to https
        assert page.headers["location"].startswith("https://")
    finally:
        worker.stop()


# --- the same topology, without Docker ------------------------------------------------------


def nginx_for(
    workers: list[Server], tmp: Path, static: Path, port: int, tls_port: int | None = None
) -> str:
    """deploy/nginx.conf (and nginx-tls.conf when ``tls_port``) with the compose names
    and paths replaced by these loopback workers, files in ``tmp`` and ``static``."""
    conf = NGINX_CONF.replace("listen 80;", f"listen 127.0.0.1:{port};")
    if tls_port is not None:
        conf += TLS_CONF.replace("listen 443 ssl;", f"listen 127.0.0.1:{tls_port} ssl;")
        conf = conf.replace("/etc/nginx/certs/", f"{tmp}/certs/")
    for name, worker in zip(sorted(web_services()), workers, strict=True):
        conf = conf.replace(f"server {name}:8000", f"server 127.0.0.1:{worker.port}")
    assert set(upstream_servers()).isdisjoint(conf.split())  # every name was replaced
    locations = LOCATIONS_CONF.replace("alias /app/staticfiles/;", f"alias {static}/;")
    (tmp / "locations.conf").write_text(locations)
    conf = conf.replace("/etc/nginx/chatsite/locations.conf", str(tmp / "locations.conf"))
    return (
        f"daemon off;\nworker_processes 1;\npid {tmp}/nginx.pid;\n"
        f"error_log {tmp}/error.log warn;\nevents {{}}\nhttp {{\n"
        f"access_log off;\nclient_body_temp_path {tmp}/body;\nproxy_temp_path {tmp}/proxy;\n"
        f"{conf}\n}}\n"
    )


def self_signed_certificate(directory: Path, name: str = "127.0.0.1") -> None:
    """A throwaway certificate for ``name`` (an address or a host name), as fullchain.pem
    and privkey.pem."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    try:
        alt_name = x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        alt_name = x509.DNSName(name)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([alt_name]), critical=False)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir()
    (directory / "fullchain.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    (directory / "privkey.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


@dataclass
class Topology:
    proxy: Server  # nginx, plain HTTP
    workers: list[Server]
    tls_port: int | None = None

    @property
    def https_url(self) -> str:
        return f"https://127.0.0.1:{self.tls_port}"


@pytest.fixture
def start_topology(django_db_setup, redis_url, tmp_path):
    """nginx with deploy/'s configuration in front of two daphne workers."""
    nginx = shutil.which("nginx", path=f"{os.environ.get('PATH', '')}:/usr/sbin")
    if nginx is None:
        if os.environ.get("CI"):
            pytest.fail("CI installs nginx (.ci/run); it is missing")
        pytest.skip("nginx is not installed here (apt-get install nginx-light)")
    started: list = []
    cleanup: list[Path] = []

    def start(*, env: dict | None = None, tls: bool = False) -> Topology:
        env = {
            "REDIS_URL": redis_url,
            "CHANNEL_PREFIX": f"topology-{os.getpid()}",
            "CHAT_OFFLINE_DELAY_MS": "10",
            **(env or {}),
        }
        workers = [start_daphne(env=env, name=f"topo-web{n}") for n in (1, 2)]
        started.extend(workers)
        port, tls_port = free_port(), free_port() if tls else None
        tmp_path.chmod(0o755)
        # Where nginx's workers (another user when run as root) can read: not under the
        # test's private temporary directory.
        static = Path(tempfile.mkdtemp(prefix="chatsite-static-"))
        static.chmod(0o755)
        cleanup.append(static)
        (static / "conversations").mkdir(mode=0o755)
        shutil.copy(ROOT / "conversations/static/conversations/chat.css", static / "conversations")
        (static / "conversations" / "chat.css").chmod(0o644)
        if tls:
            self_signed_certificate(tmp_path / "certs")
        conf = nginx_for(workers, tmp_path, static, port, tls_port)
        (tmp_path / "nginx.conf").write_text(conf)
        process = subprocess.Popen(
            [nginx, "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")],
            stderr=subprocess.PIPE,
            text=True,
        )
        proxy = Server(process=process, port=port, log_path=tmp_path / "error.log")
        started.append(proxy)
        wait_for_port(port, process)
        return Topology(proxy, workers, tls_port)

    yield start
    for server in started:
        server.stop()
    for directory in cleanup:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def topology(start_topology):
    topology = start_topology()
    return topology.proxy, topology.workers


@pytest.mark.django_db(transaction=True)
async def test_a_reply_streams_through_nginx_to_viewers_on_both_workers(
    topology, user, conversation
):
    proxy, (_, web2) = topology
    async with httpx.AsyncClient() as client:
        health = await client.get(f"{proxy.url}/healthz")
    assert health.json() == {"ok": True, "database": True, "channel_layer": True}

    cookie = await session_cookie(user)
    through_nginx = await WsViewer(proxy, cookie, conversation.id).open()
    on_web2 = await WsViewer(web2, cookie, conversation.id).open()
    started = time.monotonic()
    await through_nginx.send({"type": "message.send", "content": "through the proxy"})
    reply_id = await through_nginx.reply_started()
    first_token = await through_nginx.until(lambda e: e["type"] == "token")
    first_at = time.monotonic() - started
    final = await through_nginx.until_final(reply_id)
    await on_web2.until_final(reply_id)
    # Tokens flowed through nginx as they came, not in one buffered lump at the end.
    assert first_token["seq"] == 1
    assert time.monotonic() - started > first_at + 0.3
    assert through_nginx.state.text_of(reply_id) == on_web2.state.text_of(reply_id)
    assert final["message"]["content"] == through_nginx.state.text_of(reply_id)
    await asyncio.gather(through_nginx.close(), on_web2.close())


# --- HTTPS: nginx behind another TLS proxy, and nginx terminating TLS ------------------------

HTTPS_ENV = {"CHAT_HTTPS": "1"}
SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
}


def cookies_of(response: httpx.Response) -> dict[str, str]:
    """Set-Cookie lines by cookie name (the whole line, flags included)."""
    return {line.split("=", 1)[0]: line for line in response.headers.get_list("set-cookie")}


def log_in(client: httpx.Client, base: str, origin: str, headers: dict) -> str:
    """Log in through the login form as a browser at ``origin`` would; the session id."""
    form = client.get(f"{base}/login/", headers=headers)
    assert form.status_code == 200, (form.status_code, form.headers.get("location"))
    csrf_cookie = cookies_of(form)["csrftoken"]
    assert "; Secure" in csrf_cookie
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.text).group(1)
    answer = client.post(
        f"{base}/login/",
        data={"username": "alice", "password": "alice-password-1", "csrfmiddlewaretoken": token},
        headers={
            **headers,
            "Origin": origin,
            "Cookie": csrf_cookie.split(";", 1)[0],
        },
    )
    assert answer.status_code == 302, answer.text[:500]
    session = cookies_of(answer)["sessionid"]
    assert "; Secure" in session and "; HttpOnly" in session
    return session.split(";", 1)[0].split("=", 1)[1]


async def websocket_snapshot(url: str, origin: str, session: str, headers: dict, ssl=None):
    async with websockets.connect(
        url,
        additional_headers={"Cookie": f"sessionid={session}", "Origin": origin, **headers},
        ssl=ssl,
        open_timeout=10,
    ) as socket:
        return json.loads(await asyncio.wait_for(socket.recv(), 10))


@pytest.mark.real_passwords
@pytest.mark.django_db(transaction=True)
def test_behind_another_tls_proxy_login_cookies_and_websockets_work(
    start_topology, user, conversation
):
    """An outer proxy terminated TLS and sends X-Forwarded-Proto: https to nginx."""
    topology = start_topology(env=HTTPS_ENV)
    base = topology.proxy.url
    origin = f"https://127.0.0.1:{topology.proxy.port}"  # what the browser's page is
    forwarded = {"X-Forwarded-Proto": "https"}
    with httpx.Client(timeout=20) as client:
        # No redirect loop: a request that came over TLS is not sent to https again.
        session = log_in(client, base, origin, forwarded)
        page = client.get(f"{base}/", headers={**forwarded, "Cookie": f"sessionid={session}"})
        assert page.status_code == 200 and 'name="content"' in page.text
        assert "strict-transport-security" in page.headers
        # Plain HTTP, with nobody's word for TLS: sent to https; health answers as it is.
        plain = client.get(f"{base}/login/")
        assert plain.status_code == 301 and plain.headers["location"].startswith("https://")
        assert client.get(f"{base}/healthz").status_code == 200
        # nginx keeps only "https" or "http" from the outer proxy.
        odd = client.get(f"{base}/login/", headers={"X-Forwarded-Proto": "gopher"})
        assert odd.status_code == 301
        static = client.get(f"{base}/static/conversations/chat.css", headers=forwarded)
        assert static.status_code == 200
        for name, value in SECURITY_HEADERS.items():
            assert static.headers[name] == value, name
        assert "default-src 'self'" in static.headers["content-security-policy"]
    ws_url = f"ws://127.0.0.1:{topology.proxy.port}/ws/conversations/{conversation.id}/"
    snapshot = asyncio.run(websocket_snapshot(ws_url, origin, session, forwarded))
    assert snapshot["type"] == "snapshot"
    with pytest.raises(websockets.InvalidStatus):  # the http page is another origin
        asyncio.run(websocket_snapshot(ws_url, base, session, forwarded))


@pytest.mark.real_passwords
@pytest.mark.django_db(transaction=True)
def test_nginx_terminating_tls_login_cookies_and_websockets_work(
    start_topology, user, conversation
):
    topology = start_topology(env=HTTPS_ENV, tls=True)
    base = origin = topology.https_url
    with httpx.Client(timeout=20, verify=False) as client:
        # A client's claim of plain http over TLS changes nothing: no loop.
        session = log_in(client, base, origin, {"X-Forwarded-Proto": "http"})
        page = client.get(f"{base}/", headers={"Cookie": f"sessionid={session}"})
        assert page.status_code == 200 and 'name="content"' in page.text
        # Port 80 (here the proxy's plain port): health checks, and a redirect for the rest.
        assert client.get(f"{topology.proxy.url}/healthz").status_code == 200
        plain = client.get(f"{topology.proxy.url}/login/")
        assert plain.status_code == 301 and plain.headers["location"].startswith("https://")
        static = client.get(f"{base}/static/conversations/chat.css")
        assert static.headers["x-content-type-options"] == "nosniff"
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    ws_url = f"wss://127.0.0.1:{topology.tls_port}/ws/conversations/{conversation.id}/"
    snapshot = asyncio.run(websocket_snapshot(ws_url, origin, session, {}, ssl=context))
    assert snapshot["type"] == "snapshot"
