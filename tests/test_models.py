"""Several models: CHAT_MODELS, the catalog, a conversation's model, and /v1 routing by
``model`` — against a real worker, two stub OpenAI-compatible servers and the offline
model."""

import json

import httpx
import openai
import pytest
from django.core.exceptions import ImproperlyConfigured

from conversations.llm import catalog
from conversations.models import Message

from .conftest import run_stub
from .helpers.api import bearer, wait_until_final
from .helpers.servers import start_daphne
from .helpers.ws import connect, receive, receive_until_final

pytestmark = pytest.mark.django_db(transaction=True)


def test_nothing_configured_is_the_offline_model(settings):
    settings.CHAT_MODELS = ""
    settings.OPENAI_API_KEY = settings.OPENAI_BASE_URL = ""
    assert catalog.names() == ["offline-demo"]
    assert catalog.default().offline


def test_openai_settings_alone_are_one_model_as_before(settings):
    settings.CHAT_MODELS = ""
    settings.OPENAI_BASE_URL = "http://127.0.0.1:9/v1"
    settings.CHAT_MODEL = "local"
    assert [(m.name, m.model, m.base_url) for m in catalog.models()] == [
        ("local", "local", "http://127.0.0.1:9/v1")
    ]


def test_chat_models_names_each_model_with_its_server(settings):
    settings.OPENAI_API_KEY = "sk-shared"
    settings.OPENAI_BASE_URL = ""
    settings.CHAT_MODELS = json.dumps(
        [
            {"name": "fast", "model": "llama3.1:8b", "base_url": "http://127.0.0.1:11434/v1"},
            {"name": "gpt-4o-mini", "label": "GPT-4o mini"},
            {"name": "demo", "model": "offline-demo"},
        ]
    )
    fast, gpt, demo = catalog.models()
    assert catalog.default() == fast
    assert (fast.model, fast.base_url, fast.api_key) == (
        "llama3.1:8b",
        "http://127.0.0.1:11434/v1",
        "sk-shared",
    )
    assert (gpt.model, gpt.shown) == ("gpt-4o-mini", "GPT-4o mini")
    assert demo.offline and "Offline demo model" in demo.shown
    assert catalog.for_reply("gone") == fast  # a model removed since: the default


@pytest.mark.parametrize(
    "value",
    [
        "{not json",
        '{"name": "x"}',
        '[{"model": "x"}]',
        '[{"name": "a"}, {"name": "a"}]',
        '[{"name": "a", "port": 1}]',
    ],
)
def test_a_mistake_in_chat_models_is_said_at_start(settings, value):
    settings.CHAT_MODELS = value
    with pytest.raises(ImproperlyConfigured):
        catalog.models()


async def test_the_model_picked_writes_the_next_reply_and_regenerate_can_pick_another(
    user, conversation, settings, openai_stub
):
    settings.CHAT_MODELS = json.dumps(
        [{"name": "stub", "model": "stub-model"}, {"name": "demo", "model": "offline-demo"}]
    )
    ws = await connect(user, conversation.id)
    await receive(ws)
    await ws.send_json_to({"type": "message.send", "content": "hello", "model": "demo"})
    first = (await receive_until_final(ws))[-1]["message"]
    assert first["model"] == "demo" and "offline demo model" in first["content"]
    await ws.send_json_to({"type": "reply.regenerate", "message": first["id"], "model": "stub"})
    again = (await receive_until_final(ws))[-1]["message"]
    assert again["model"] == "stub" and again["content"] == "You said: hello"
    await conversation.arefresh_from_db()
    assert conversation.model == "stub"  # the next replies too

    await ws.send_json_to({"type": "message.send", "content": "x", "model": "nope"})
    refused = await receive(ws)
    assert refused["code"] == "model_not_found"
    assert "stub, demo" in refused["detail"]
    await ws.disconnect()


# --- a real worker with two model servers and the offline model ----------------------------


@pytest.fixture(scope="module")
def other_stub():
    """A second model server, serving the model "other"."""
    yield from run_stub("--model", "other")


@pytest.fixture(scope="module")
def worker(django_db_setup, stub_server, other_stub):
    models = [
        {"name": "stub-a", "model": "stub-model", "base_url": f"{stub_server}/v1"},
        {"name": "stub-b", "model": "other", "base_url": f"{other_stub}/v1", "label": "Other"},
        {"name": "offline-demo"},
    ]
    server = start_daphne(
        env={
            "CHAT_MODELS": json.dumps(models),
            "OPENAI_API_KEY": "sk-test",
            "CHAT_MODEL_RETRIES": "0",
        },
        name="models-daphne",
    )
    yield server
    server.stop()


def requests_to(stub: str) -> int:
    return httpx.get(f"{stub}/stats").json()["requests"]


def test_the_api_and_v1_list_the_models_and_route_by_name(worker, key, stub_server, other_stub):
    api = httpx.Client(base_url=f"{worker.url}/api", headers=bearer(key), timeout=20)
    assert api.get("/models").json() == [
        {"name": "stub-a", "label": "stub-a", "default": True},
        {"name": "stub-b", "label": "Other", "default": False},
        {
            "name": "offline-demo",
            "label": catalog.OFFLINE_LABEL,
            "default": False,
        },
    ]
    client = openai.OpenAI(base_url=f"{worker.url}/v1", api_key=key, max_retries=0)
    assert [m.id for m in client.models.list()] == ["stub-a", "stub-b", "offline-demo"]

    before = requests_to(other_stub), requests_to(stub_server)
    answer = client.chat.completions.create(
        model="stub-b", messages=[{"role": "user", "content": "Which one?"}]
    )
    assert answer.model == "stub-b"
    assert answer.choices[0].message.content == "You said: Which one?"
    after = requests_to(other_stub), requests_to(stub_server)
    # /stats counts itself: one request each, and the chat's one to stub-b's server.
    assert (after[0] - before[0], after[1] - before[1]) == (2, 1)
    offline = client.chat.completions.create(
        model="offline-demo", messages=[{"role": "user", "content": "And you?"}]
    )
    assert "offline demo model" in offline.choices[0].message.content

    with pytest.raises(openai.NotFoundError) as refused:
        client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}]
        )
    assert refused.value.code == "model_not_found"
    assert "stub-a, stub-b, offline-demo" in refused.value.message


def test_a_conversation_keeps_its_model_and_a_patch_changes_the_next_reply(worker, key):
    api = httpx.Client(base_url=f"{worker.url}/api", headers=bearer(key), timeout=20)
    created = api.post("/conversations", json={"model": "stub-b"}).json()
    assert created["model"] == "stub-b"
    cid = created["id"]
    sent = api.post(f"/conversations/{cid}/messages", json={"content": "one"}).json()
    assert wait_until_final(sent["reply"]["id"]).model == "stub-b"

    patched = api.patch(f"/conversations/{cid}", json={"model": "offline-demo"})
    assert patched.status_code == 200 and patched.json()["model"] == "offline-demo"
    sent = api.post(f"/conversations/{cid}/messages", json={"content": "two"}).json()
    reply = wait_until_final(sent["reply"]["id"])
    assert reply.model == "offline-demo" and "offline demo model" in reply.content
    assert Message.objects.get(pk=sent["user_message"]["id"]).conversation.model == "offline-demo"

    for refused in (
        api.post("/conversations", json={"model": "gpt-4o-mini"}),
        api.patch(f"/conversations/{cid}", json={"model": "gpt-4o-mini"}),
        api.post(f"/conversations/{cid}/messages", json={"content": "x", "model": "gone"}),
    ):
        assert refused.status_code == 400, refused.text
        assert refused.json()["code"] == "model_not_found"
        assert "stub-a, stub-b, offline-demo" in refused.json()["detail"]


def test_a_servers_models_are_discovered_as_a_chat_models_value(other_stub):
    from io import StringIO

    from django.core.management import call_command

    out = StringIO()
    call_command("discover_models", "--base-url", f"{other_stub}/v1", stdout=out)
    assert json.loads(out.getvalue()) == [{"name": "other", "base_url": f"{other_stub}/v1"}]
