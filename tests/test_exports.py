"""Your data: a conversation, or all of yours, exported as JSON (every branch) or
Markdown (the branch shown), and a JSON export imported back; and presets. Over real
HTTP to a real worker (offline model)."""

import json

import pytest
from django.test import AsyncClient, Client

from conversations.models import Conversation, Message, Preset
from conversations.services.conversations import conversation_create

from .helpers.api import wait_until_final

pytestmark = pytest.mark.django_db(transaction=True)


def exchange(api, cid: str, content: str) -> dict:
    sent = api.post(f"/conversations/{cid}/messages", json={"content": content}).json()
    wait_until_final(sent["reply"]["id"])
    return sent


def branched_conversation(api) -> str:
    cid = api.post(
        "/conversations", json={"title": "Exported", "system_prompt": "Be brief."}
    ).json()["id"]
    first = exchange(api, cid, "first question")
    exchange(api, cid, "second question")
    edit = api.post(
        f"/conversations/{cid}/messages/{first['user_message']['id']}/edit",
        json={"content": "first, edited"},
    ).json()
    wait_until_final(edit["reply"]["id"])
    return cid


def test_a_conversation_exports_as_markdown_and_json_and_imports_back(api, user):
    cid = branched_conversation(api)
    markdown = api.get(f"/conversations/{cid}/export", params={"format": "md"})
    assert markdown.status_code == 200
    assert markdown.headers["content-type"].startswith("text/markdown")
    assert "attachment" in markdown.headers["content-disposition"]
    text = markdown.text
    assert text.startswith("# Exported\n")
    assert "> Be brief." in text
    assert "## You\n\nfirst, edited" in text
    assert "second question" not in text  # another branch
    assert "## Assistant (offline-demo)" in text

    exported = api.get(f"/conversations/{cid}/export", params={"format": "json"})
    data = exported.json()
    assert data["format"] == "chatsite.conversation" and data["version"] == 1
    messages = data["conversation"]["messages"]
    assert len(messages) == 6  # both branches
    assert [m["active"] for m in messages] == [False, False, False, False, True, True]

    imported = api.post("/conversations/import", json=data)
    assert imported.status_code == 201, imported.text
    new = Conversation.objects.get(pk=imported.json()["id"])
    assert new.owner == user and new.pk != cid
    assert (new.title, new.system_prompt) == ("Exported", "Be brief.")
    again = api.get(f"/conversations/{new.pk}/export", params={"format": "json"}).json()
    strip = ("id", "parent", "created_at", "completed_at")
    assert [
        {k: v for k, v in m.items() if k not in strip} for m in again["conversation"]["messages"]
    ] == [{k: v for k, v in m.items() if k not in strip} for m in messages]
    # The branches came along: the same shape of tree, the same branch shown.
    shown = api.get(f"/conversations/{new.pk}").json()["messages"]
    assert shown[0]["content"] == "first, edited"
    assert len(shown[0]["siblings"]) == 2
    reread = api.get(f"/conversations/{new.pk}/export", params={"format": "md"}).text

    def unstarted(markdown: str) -> list[str]:
        return [line for line in markdown.splitlines() if not line.startswith("- Started:")]

    assert unstarted(reread) == unstarted(text)


def test_all_of_yours_export_in_one_file(api, user, other_user):
    mine = [api.post("/conversations", json={"title": f"Mine {i}"}).json()["id"] for i in range(3)]
    exchange(api, mine[0], "hello")
    conversation_create(owner=other_user, title="Not mine")
    everything = api.get("/conversations/export", params={"format": "json"})
    assert everything.status_code == 200
    data = json.loads(everything.content)
    assert data["format"] == "chatsite.conversations"
    assert sorted(c["id"] for c in data["conversations"]) == sorted(mine)
    assert "Not mine" not in everything.text
    markdown = api.get("/conversations/export", params={"format": "md"}).text
    assert all(f"# Mine {i}" in markdown for i in range(3))


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"format": "other"}, "format"),
        ({"format": "chatsite.conversation", "version": 2}, "version"),
        ({"format": "chatsite.conversation", "version": 1, "conversation": []}, "conversation"),
        (
            {
                "format": "chatsite.conversation",
                "version": 1,
                "conversation": {"messages": [{"id": "a", "parent": "b", "role": "user"}]},
            },
            "parent",
        ),
        (
            {
                "format": "chatsite.conversation",
                "version": 1,
                "conversation": {"messages": [{"id": "a", "role": "wizard"}]},
            },
            "role",
        ),
    ],
)
def test_an_import_that_is_not_an_export_saves_nothing_and_says_why(api, body, says):
    before = Conversation.objects.count()
    refused = api.post("/conversations/import", json=body)
    assert refused.status_code == 400
    assert refused.json()["code"] == "invalid_import"
    assert says in refused.json()["detail"]
    assert Conversation.objects.count() == before
    assert api.post("/conversations/import", content=b"{not json").status_code == 400


def test_exports_are_yours_only(api, other_user):
    theirs = conversation_create(owner=other_user)
    assert api.get(f"/conversations/{theirs.pk}/export").status_code == 404


# --- presets ---------------------------------------------------------------------------------


def test_presets_shared_and_your_own_start_a_conversation(api, user, other_user):
    shared = Preset.objects.create(name="Reviewer", system_prompt="Review code.", temperature=0.2)
    Preset.objects.create(name="Theirs", owner=other_user)
    mine = api.post(
        "/presets", json={"name": "Pirate", "system_prompt": "Talk like a pirate."}
    ).json()
    listed = api.get("/presets").json()
    assert [(p["name"], p["shared"]) for p in listed] == [("Pirate", False), ("Reviewer", True)]

    started = api.post("/conversations", json={"preset": shared.pk}).json()
    assert (started["system_prompt"], started["temperature"]) == ("Review code.", 0.2)
    overridden = api.post(
        "/conversations", json={"preset": mine["id"], "system_prompt": "Be terse."}
    ).json()
    assert overridden["system_prompt"] == "Be terse."
    assert api.post("/conversations", json={"preset": 999999}).status_code == 404
    assert api.post("/presets", json={"name": "x", "model": "nope"}).json()["code"] == (
        "model_not_found"
    )
    # Staff's shared presets are theirs to delete, in the admin.
    assert api.delete(f"/presets/{shared.pk}").status_code == 404
    assert api.delete(f"/presets/{mine['id']}").status_code == 204
    assert not Preset.objects.filter(pk=mine["id"]).exists()


def test_a_system_prompt_set_in_a_patch_applies_to_the_next_reply(api):
    cid = api.post("/conversations", json={}).json()["id"]
    patched = api.patch(
        f"/conversations/{cid}", json={"system_prompt": "Answer in French.", "temperature": 0.5}
    )
    assert patched.status_code == 200
    assert patched.json()["system_prompt"] == "Answer in French."
    assert Conversation.objects.get(pk=cid).temperature == 0.5
    assert api.patch(f"/conversations/{cid}", json={"system_prompt": "x" * 20001}).status_code in (
        400,
        413,
    )
    title_only = api.patch(f"/conversations/{cid}", json={"title": "Renamed"}).json()
    assert title_only["system_prompt"] == "Answer in French."


def test_the_settings_page_makes_and_deletes_presets(user):
    client = Client()
    client.force_login(user)
    page = client.get("/settings/")
    assert page.status_code == 200
    assert b"API keys" in page.content and b"Change password" in page.content
    made = client.post("/settings/", {"name": "Short", "system_prompt": "Be short."})
    assert made.status_code == 302
    preset = Preset.objects.get(owner=user)
    assert b"Short" in client.get("/settings/").content
    assert client.post(f"/settings/presets/{preset.pk}/delete/").status_code == 302
    assert not Preset.objects.exists()


async def test_the_new_chat_form_starts_from_a_preset_with_the_model_picked(user):
    # Async: the reply the form starts runs in this test's loop, and ends with it.
    preset = await Preset.objects.acreate(name="Terse", system_prompt="Be terse.", temperature=0.1)
    client = AsyncClient()
    await client.aforce_login(user)
    page = (await client.get("/")).content.decode()
    assert 'name="preset"' in page and "Terse (shared)" in page and 'name="model"' in page
    response = await client.post(
        "/c/new/", {"content": "hi", "preset": str(preset.pk), "model": "offline-demo"}
    )
    assert response.status_code == 302
    conversation = await Conversation.objects.aget()
    assert (conversation.system_prompt, conversation.temperature) == ("Be terse.", 0.1)
    assert conversation.model == "offline-demo"
    reply = await Message.objects.aget(role="assistant")
    assert reply.model == "offline-demo"
