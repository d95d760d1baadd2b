"""The deployment: docker-compose.yml and deploy/nginx.conf describe something real.

There is no Docker engine here, so the compose file is checked against the project
(every service, command, port and variable refers to something that exists), and the
same topology — nginx in front of two daphne workers sharing the database and Redis —
is run without Docker, through the very nginx.conf the compose file mounts.
"""

import asyncio
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import yaml
from django.core.management import get_commands
from django.urls import resolve

from .conftest import session_cookie
from .protocol_client import WsViewer
from .servers import ROOT, Server, free_port, start_daphne, wait_for_port

COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
NGINX_CONF = (ROOT / "deploy" / "nginx.conf").read_text()
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
    assert "proxy_set_header Upgrade $http_upgrade" in NGINX_CONF
    assert "proxy_buffering off" in NGINX_CONF
    timeouts = [
        int(v) * {"s": 1, "m": 60, "h": 3600}[u]
        for v, u in re.findall(r"proxy_read_timeout\s+(\d+)([smh])", NGINX_CONF)
    ]
    assert timeouts and min(timeouts) > 15  # longer than the SSE heartbeat
    gzip_types = re.search(r"gzip_types([^;]*);", NGINX_CONF).group(1)
    assert "text/event-stream" not in gzip_types


# --- the same topology, without Docker ------------------------------------------------------


def nginx_for(workers: list[Server], port: int, tmp: Path) -> str:
    """deploy/nginx.conf with the compose names replaced by these loopback workers."""
    conf = NGINX_CONF.replace("listen 80;", f"listen 127.0.0.1:{port};")
    conf = conf.replace("alias /app/staticfiles/;", f"alias {ROOT / 'staticfiles'}/;")
    for name, worker in zip(sorted(web_services()), workers, strict=True):
        conf = conf.replace(f"server {name}:8000", f"server 127.0.0.1:{worker.port}")
    assert set(upstream_servers()).isdisjoint(conf.split())  # every name was replaced
    return (
        f"daemon off;\nworker_processes 1;\npid {tmp}/nginx.pid;\n"
        f"error_log {tmp}/error.log warn;\nevents {{}}\nhttp {{\n"
        f"access_log off;\nclient_body_temp_path {tmp}/body;\nproxy_temp_path {tmp}/proxy;\n"
        f"{conf}\n}}\n"
    )


@pytest.fixture
def topology(django_db_setup, redis_url, tmp_path):
    nginx = shutil.which("nginx", path=f"{os.environ.get('PATH', '')}:/usr/sbin")
    if nginx is None:
        if os.environ.get("CI"):
            pytest.fail("CI installs nginx (.ci/run); it is missing")
        pytest.skip("nginx is not installed here (apt-get install nginx-light)")
    env = {
        "REDIS_URL": redis_url,
        "CHANNEL_PREFIX": f"topology-{os.getpid()}",
        "CHAT_OFFLINE_DELAY_MS": "10",
    }
    workers = [start_daphne(env=env, name="topo-web1"), start_daphne(env=env, name="topo-web2")]
    port = free_port()
    tmp_path.chmod(0o755)
    (tmp_path / "nginx.conf").write_text(nginx_for(workers, port, tmp_path))
    process = subprocess.Popen(
        [nginx, "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for_port(port, process)
        yield Server(process=process, port=port, log_path=tmp_path / "error.log"), workers
    finally:
        os.kill(process.pid, 15)
        process.wait(timeout=10)
        for worker in workers:
            worker.stop()


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
