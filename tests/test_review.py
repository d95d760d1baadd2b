"""The review app's parts: sanitised Markdown, exports, the usage figures, the review
services and the staff live view (through the whole ASGI stack)."""

import csv
import io
import json
import warnings
from datetime import timedelta

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from conversations.models import Conversation, Message
from review import exports, selectors, services
from review.markdown import render_markdown
from review.models import Feedback, TranscriptView

from .helpers import review as build
from .helpers.review import READ, REVIEW
from .helpers.ws import connect, joined_tokens, receive, receive_until_final

CHANGELIST = "admin:conversations_conversation_changelist"


# --- Markdown ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "html"),
    [
        ("<script>alert(1)</script>", "<p>&lt;script&gt;alert(1)&lt;/script&gt;</p>"),
        ("<img src=x onerror=alert(1)>", "<p>&lt;img src=x onerror=alert(1)&gt;</p>"),
        ("[x](javascript:alert(1))", "<p>[x](javascript:alert(1))</p>"),
        ("[x](data:text/html,hi)", "<p>[x](data:text/html,hi)</p>"),
        ("[x](/admin/)", '<p><a rel="noopener noreferrer nofollow">x</a></p>'),
        (
            "[x](https://example.com/?a=1&b=2)",
            '<p><a href="https://example.com/?a=1&amp;b=2" rel="noopener noreferrer nofollow">'
            "x</a></p>",
        ),
        (
            "[m](mailto:a@example.com)",
            '<p><a href="mailto:a@example.com" rel="noopener noreferrer nofollow">m</a></p>',
        ),
        (
            "![p](https://tracker.example/p.png)",
            '<p>!<a href="https://tracker.example/p.png" rel="noopener noreferrer nofollow">'
            "p</a></p>",
        ),
        (
            "```html\n<b onclick=x>\n```",
            '<pre><code class="language-html">&lt;b onclick=x&gt;\n</code></pre>',
        ),
        ("```evil\nx\n```", '<pre><code class="">x\n</code></pre>'),  # not its class
        # Math: the formula's text, escaped, for the page to typeset.
        ("$a<b$", '<p><span class="math-inline">a&lt;b</span></p>'),
        ("\\[x^2\\]", '<div class="math-display">x^2</div>'),
        ("$5 and $10", "<p>$5 and $10</p>"),
        ("**b** *i* ~~s~~ `c`", "<p><strong>b</strong> <em>i</em> <s>s</s> <code>c</code></p>"),
    ],
)
def test_markdown_is_rendered_and_never_trusted_as_html(source, html):
    assert render_markdown(source).strip() == html


def test_markdown_tables_and_lists_survive():
    html = render_markdown("| a | b |\n|:--|--:|\n| 1 | 2 |\n\n1. one\n2. two")
    assert "<th>a</th>" in html
    assert "style=" not in html
    assert "<ol>\n<li>one</li>" in html


# --- exports ----------------------------------------------------------------------------

TRICKY = [
    'commas, "quotes" and\nnew lines\r\nand CRLF',
    '=HYPERLINK("https://evil.example","click")',
    "- a markdown list\n- second item",
    "+1 for this",
    "@SUM(A1:A2)",
    "emoji 🎉 and 中文 and ‮ right-to-left",
    "",
]


@pytest.fixture
def exported_corpus(user, other_user):
    now = timezone.now()
    first = build.conversation(user, "=cmd|' /C calc'!A0", system_prompt="Be brief.")
    for i, text in enumerate(TRICKY):
        _, reply = build.exchange(
            first, text, text[::-1], at=now - timedelta(minutes=10 - i),
            time_to_first_token_ms=100 + i, duration_ms=1000 + i, client_id=None,
        )  # fmt: skip
        if i == 1:
            build.rate(reply, user, Feedback.Rating.DOWN, "=bad")
            build.rate(reply, other_user, Feedback.Rating.UP)
    failed = build.conversation(other_user, "failed one", source="api", model="gpt-x")
    build.exchange(
        failed, "q", "partial", status="failed", usage=None,
        error={"code": "model_error", "detail": "HTTP 500, sorry"},
    )  # fmt: skip
    services.conversation_review(
        conversation=failed, reviewer=user, flagged=True, notes="-check", reviewed=True
    )
    empty = build.conversation(user, "no messages yet")
    build.conversation(user, "not selected")
    return [first, failed, empty]


def _export(client, action, conversations, query=""):
    response = client.post(
        reverse(CHANGELIST) + query,
        {"action": action, "_selected_action": [str(c.pk) for c in conversations]},
    )
    assert response.status_code == 200
    assert response.streaming
    assert response["Content-Disposition"].startswith("attachment; filename=")
    with warnings.catch_warnings():
        # The test client is synchronous; under ASGI the async iterator streams.
        warnings.simplefilter("ignore")
        chunks = list(response)
    return response, chunks


def _iso(value):
    return value.isoformat() if value else None


@pytest.mark.django_db
def test_the_json_export_matches_the_database_exactly(admin_client, exported_corpus):
    response, chunks = _export(admin_client, "export_json", exported_corpus)
    assert response["Content-Type"] == "application/json; charset=utf-8"
    document = json.loads(b"".join(chunks))
    assert document["format"] == "chatsite.conversations"
    assert document["version"] == 1
    by_id = {c["id"]: c for c in document["conversations"]}
    assert set(by_id) == {str(c.pk) for c in exported_corpus}

    for row in Conversation.objects.filter(pk__in=[c.pk for c in exported_corpus]).values():
        got = by_id[str(row["id"])]
        assert got["owner"]["id"] == row["owner_id"]
        for field in ("title", "source", "model", "system_prompt", "flagged", "review_notes"):
            assert got[field] == row[field], field
        for field in ("created_at", "updated_at", "reviewed_at"):
            assert got[field] == _iso(row[field]), field
        messages = list(
            Message.objects.filter(conversation_id=row["id"]).order_by("created_at").values()
        )
        assert [m["id"] for m in got["messages"]] == [str(m["id"]) for m in messages]
        for message, out in zip(messages, got["messages"], strict=True):
            for field in (
                "role", "content", "status", "seq", "model", "usage", "error",
                "time_to_first_token_ms", "duration_ms", "client_id",
            ):  # fmt: skip
                assert out[field] == message[field], field
            assert out["created_at"] == _iso(message["created_at"])
            assert out["completed_at"] == _iso(message["completed_at"])
            assert out["reply_to"] == (
                str(message["reply_to_id"]) if message["reply_to_id"] else None
            )
            ratings = Feedback.objects.filter(message_id=message["id"]).order_by("created_at")
            assert [(f["user"], f["rating"], f["comment"]) for f in out["feedback"]] == [
                (f.user.username, f.rating, f.comment) for f in ratings
            ]
    assert by_id[str(exported_corpus[1].pk)]["reviewed_by"] == "alice"
    assert by_id[str(exported_corpus[2].pk)]["messages"] == []
    # Every byte of the tricky texts came through.
    contents = [m["content"] for m in by_id[str(exported_corpus[0].pk)]["messages"]]
    assert [c for c in contents[::2]] == TRICKY


def _uncell(value: str) -> str:
    """The CSV cell's text as stored: the apostrophe that disarms a formula removed."""
    if value.startswith("'") and value[1:].startswith(("=", "+", "-", "@", "\t", "\r")):
        return value[1:]
    return value


@pytest.mark.django_db
def test_the_csv_export_matches_the_database_and_disarms_formulas(admin_client, exported_corpus):
    response, chunks = _export(admin_client, "export_csv", exported_corpus)
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    rows = list(csv.reader(io.StringIO(b"".join(chunks).decode(), newline="")))
    assert rows[0] == exports.CSV_COLUMNS
    rows = [dict(zip(exports.CSV_COLUMNS, row, strict=True)) for row in rows[1:]]

    def text(value) -> str:
        return "" if value is None else str(value)

    expected = []
    for conv in sorted(exported_corpus, key=lambda c: (c.created_at, c.pk)):
        conv.refresh_from_db()
        head = {
            "conversation_id": str(conv.pk),
            "conversation_title": conv.title,
            "owner": conv.owner.username,
            "source": conv.source,
            "conversation_model": conv.model,
            "conversation_created_at": conv.created_at.isoformat(),
            "conversation_updated_at": conv.updated_at.isoformat(),
            "flagged": str(conv.flagged),
            "reviewed_by": conv.reviewed_by.username if conv.reviewed_by else "",
            "reviewed_at": text(_iso(conv.reviewed_at)),
            "review_notes": conv.review_notes,
        }
        messages = list(conv.messages.order_by("created_at", "pk"))
        empty = dict.fromkeys(exports.CSV_COLUMNS[len(head) :], "")
        for m in messages or [None]:
            if m is None:
                expected.append({**head, **empty})
                continue
            ratings = list(m.feedback.values_list("rating", flat=True))
            expected.append(
                {
                    **head,
                    "message_id": str(m.pk),
                    "role": m.role,
                    "status": m.status,
                    "model": m.model,
                    "content": m.content,
                    "prompt_tokens": text((m.usage or {}).get("prompt_tokens")),
                    "completion_tokens": text((m.usage or {}).get("completion_tokens")),
                    "time_to_first_token_ms": text(m.time_to_first_token_ms),
                    "duration_ms": text(m.duration_ms),
                    "error_code": text((m.error or {}).get("code")),
                    "error_detail": text((m.error or {}).get("detail")),
                    "created_at": m.created_at.isoformat(),
                    "completed_at": text(_iso(m.completed_at)),
                    "thumbs_up": str(ratings.count(1)),
                    "thumbs_down": str(ratings.count(-1)),
                }
            )
    assert [{k: _uncell(v) for k, v in row.items()} for row in rows] == expected
    # Formulas arrive as text, not as formulas.
    cells = [cell for row in rows for cell in row.values()]
    assert not [c for c in cells if c.startswith(("=", "+", "-", "@"))]
    assert '\'=HYPERLINK("https://evil.example","click")' in cells
    assert "'-check" in cells


@pytest.mark.django_db
def test_exports_stream_one_conversation_at_a_time(admin_client, user, monkeypatch):
    monkeypatch.setattr(exports, "CHUNK", 2)
    convs = [build.conversation(user, f"c{i}") for i in range(5)]
    for conv in convs:
        build.exchange(conv, "q", "a")
    _, chunks = _export(admin_client, "export_json", convs)
    assert len(chunks) == 1 + 5 + 1  # head, one per conversation, tail
    assert len(json.loads(b"".join(chunks))["conversations"]) == 5
    _, chunks = _export(admin_client, "export_csv", convs)
    assert len(chunks) == 1 + 5


@pytest.mark.django_db
def test_select_all_exports_every_conversation_the_filters_match(admin_client, exported_corpus):
    response = admin_client.post(
        reverse(CHANGELIST) + "?failed=yes",
        {
            "action": "export_json",
            "select_across": "1",
            "index": "0",
            "_selected_action": [str(exported_corpus[1].pk)],
        },
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        document = json.loads(b"".join(response))
    assert [c["title"] for c in document["conversations"]] == ["failed one"]
    assert list(TranscriptView.objects.values_list("conversation_id", "via")) == [
        (exported_corpus[1].pk, "export")
    ]


@pytest.mark.django_db
def test_every_exported_conversation_is_audited(admin_client, admin_user, exported_corpus):
    _export(admin_client, "export_csv", exported_corpus)
    audited = TranscriptView.objects.filter(user=admin_user, via="export")
    assert sorted(audited.values_list("conversation_ref", flat=True)) == sorted(
        c.pk for c in exported_corpus
    )


# --- the usage figures ------------------------------------------------------------------


@pytest.mark.django_db
def test_usage_per_user_per_day(user, other_user):
    now = timezone.now()
    earlier = now - timedelta(days=2)
    alice_today = build.conversation(user, "a")
    for ttft, usage in [(100, (10, 5)), (300, (20, 7)), (200, (0, 0))]:
        build.exchange(
            alice_today, "q", "a", time_to_first_token_ms=ttft, at=now,
            usage={"prompt_tokens": usage[0], "completion_tokens": usage[1]},
        )  # fmt: skip
    build.exchange(alice_today, "q", "", status="failed", usage=None, at=now)
    build.exchange(alice_today, "q", "", status="interrupted", usage=None, at=now)
    alice_before = build.conversation(user, "b")
    build.exchange(
        alice_before, "q", "a", status="cancelled", time_to_first_token_ms=50, at=earlier,
        usage={"prompt_tokens": 1, "completion_tokens": 2},
    )  # fmt: skip
    bob = build.conversation(other_user, "c")
    for ttft in (100, 400):
        build.exchange(bob, "q", "a", time_to_first_token_ms=ttft, at=now)
    build.exchange(bob, "q", "a", time_to_first_token_ms=9999, at=now - timedelta(days=40))

    since = now - timedelta(days=7)
    rows = {(r["day"], r["username"]): r for r in selectors.usage_by_user_day(since=since)}
    figures = ("replies", "prompt_tokens", "completion_tokens", "failed", "interrupted",
               "cancelled", "median_ttft_ms")  # fmt: skip
    today, before = now.date(), earlier.date()
    got = {key: tuple(row[f] for f in figures) for key, row in rows.items()}
    assert got == {
        (today, "alice"): (5, 30, 12, 1, 1, 0, 200.0),
        (before, "alice"): (1, 1, 2, 0, 0, 1, 50.0),
        (today, "bob"): (2, 20, 10, 0, 0, 0, 250.0),
    }
    days = {r["day"]: r for r in selectors.usage_by_day(since=since)}
    assert (days[today]["replies"], days[today]["median_ttft_ms"]) == (7, 200.0)
    total = selectors.usage_total(since=since)
    assert (total["replies"], total["users"], total["median_ttft_ms"]) == (8, 2, 150.0)
    assert (total["prompt_tokens"], total["completion_tokens"]) == (51, 24)


# --- services ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_permission_rules(user):
    reader = build.staff("reader", READ)
    reviewer = build.staff("reviewer", READ, REVIEW)
    review_only = build.staff("review-only", REVIEW)
    assert [selectors.can_read_transcripts(u) for u in (user, reader, reviewer, review_only)] == [
        False, True, True, False,
    ]  # fmt: skip
    assert [selectors.can_review(u) for u in (user, reader, reviewer, review_only)] == [
        False, False, True, False,
    ]  # fmt: skip
    reviewer.is_active = False
    assert not selectors.can_read_transcripts(reviewer)


# --- the staff live view ----------------------------------------------------------------


@database_sync_to_async
def _session_cookie(user) -> str:
    # Logged in through database_sync_to_async, which closes its connection after: a
    # connection left open in a worker thread keeps PostgreSQL's test database busy.
    client = Client()
    client.force_login(user)
    return client.cookies["sessionid"].value


async def watch(user, conversation_id, *, origin="http://127.0.0.1:8000"):
    """The admin page's WebSocket, through the whole ASGI stack."""
    from chatsite.asgi import application

    headers = [(b"host", b"127.0.0.1:8000"), (b"origin", origin.encode())]
    if user is not None:
        headers.append((b"cookie", f"sessionid={await _session_cookie(user)}".encode()))
    communicator = WebsocketCommunicator(
        application, f"/ws/admin/conversations/{conversation_id}/", headers=headers
    )
    connected, code = await communicator.connect(timeout=5)
    communicator.accepted, communicator.close_code = connected, code
    return communicator


@pytest.fixture
def reader(transactional_db):
    return build.staff("reader", READ)


@pytest.mark.django_db(transaction=True)
async def test_staff_watch_a_reply_stream_live_and_read_only(user, reader, conversation):
    staff = await watch(reader, conversation.id)
    assert staff.accepted
    snapshot = await receive(staff)
    assert (snapshot["type"], snapshot["messages"]) == ("snapshot", [])

    chat = await connect(user, conversation.id)
    await receive(chat)
    await chat.send_json_to({"type": "message.send", "content": "Hello, watched world"})
    watched = await receive_until_final(staff)
    await receive_until_final(chat)

    created = [e["message"] for e in watched if e["type"] == "message.created"]
    assert [m["role"] for m in created] == ["user", "assistant"]
    final = watched[-1]
    assert final["type"] == "message.completed"
    reply = await Message.objects.aget(pk=final["message"]["id"])
    assert joined_tokens(watched, str(reply.pk)) == final["message"]["content"] == reply.content

    # Staff never write in the conversation.
    for request in (
        {"type": "message.send", "content": "posing as the user"},
        {"type": "reply.stop"},
        {"type": "reply.regenerate", "message": str(reply.pk)},
    ):
        await staff.send_json_to(request)
        error = await receive(staff)
        assert (error["type"], error["code"]) == ("error", "read_only")
    assert await Message.objects.acount() == 2
    await staff.send_json_to({"type": "resync"})
    assert (await receive(staff))["type"] == "snapshot"

    views = [v async for v in TranscriptView.objects.all()]
    assert [(v.username, v.conversation_ref, v.via) for v in views] == [
        ("reader", conversation.id, "live")
    ]
    await staff.disconnect()
    await chat.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_the_live_view_refuses_everyone_else(user, reader, conversation):
    owner = await watch(user, conversation.id)  # not staff, even on their own
    assert (owner.accepted, owner.close_code) == (False, 4403)
    anonymous = await watch(None, conversation.id)
    assert not anonymous.accepted
    await database_sync_to_async(reader.user_permissions.clear)()
    intern = await watch(reader, conversation.id)  # staff without the permission
    assert (intern.accepted, intern.close_code) == (False, 4403)
    read = await database_sync_to_async(Permission.objects.get)(codename=READ[1])
    await database_sync_to_async(reader.user_permissions.add)(read)
    missing = await watch(reader, "00000000-0000-0000-0000-000000000000")
    assert (missing.accepted, missing.close_code) == (False, 4404)
    foreign = await watch(reader, conversation.id, origin="http://evil.example")
    assert not foreign.accepted
    # (database_sync_to_async, not the async ORM: it closes its connection after.)
    assert not await database_sync_to_async(TranscriptView.objects.exists)()
