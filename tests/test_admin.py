"""Staff review in the Django admin: access, the list and its filters, the transcript
page, the review form and actions, the usage overview."""

import json
import warnings
from datetime import timedelta
from html.parser import HTMLParser
from urllib.parse import urlencode

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from conversations.models import Conversation, Message
from review.models import Feedback, TranscriptView

from .helpers import review as build
from .helpers.review import READ, REVIEW

pytestmark = pytest.mark.django_db

CHANGELIST = "admin:conversations_conversation_changelist"
USAGE = "admin:conversations_conversation_usage"


def change_url(conversation) -> str:
    return reverse("admin:conversations_conversation_change", args=[conversation.pk])


@pytest.fixture
def reader(db):
    return build.staff("reader", READ)


@pytest.fixture
def reviewer(db):
    return build.staff("reviewer", READ, REVIEW)


@pytest.fixture
def reader_client(client, reader):
    client.force_login(reader)
    return client


@pytest.fixture
def reviewer_client(client, reviewer):
    client.force_login(reviewer)
    return client


def titles(response) -> set[str]:
    assert response.status_code == 200, response.status_code
    return {c.title for c in response.context["cl"].result_list}


# --- access -----------------------------------------------------------------------------


def test_staff_with_the_permission_see_the_list_and_the_transcript(reader_client, conversation):
    conversation.title = "Trip to Lisbon"
    conversation.save()
    build.exchange(conversation, "Plan a trip", "Day one: Alfama.")
    response = reader_client.get(reverse(CHANGELIST))
    assert "Trip to Lisbon" in response.text
    response = reader_client.get(change_url(conversation))
    assert response.status_code == 200
    assert "Day one: Alfama." in response.text


@pytest.mark.parametrize("who", ["anonymous", "user"])
def test_non_staff_get_the_login_page_and_never_data(client, user, conversation, who):
    conversation.title = "Secret plans"
    conversation.save()
    build.exchange(conversation, "the secret question", "the secret answer")
    if who == "user":
        client.force_login(user)
    urls = [reverse(CHANGELIST), change_url(conversation), reverse(USAGE)]
    urls += [reverse("admin:review_transcriptview_changelist")]
    for url in urls:
        response = client.get(url, follow=True)
        assert response.redirect_chain[-1][0].startswith(reverse("admin:login")), url
        assert "secret" not in response.text.lower()
    response = client.post(
        reverse(CHANGELIST),
        {"action": "export_json", "_selected_action": [str(conversation.pk)]},
    )
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))
    assert not TranscriptView.objects.exists()


def test_staff_without_the_permission_are_refused(client, conversation):
    client.force_login(build.staff("intern"))
    assert client.get(reverse(CHANGELIST)).status_code == 403
    assert client.get(change_url(conversation)).status_code == 403
    assert client.get(reverse(USAGE)).status_code == 403
    assert not TranscriptView.objects.exists()


def test_reading_without_the_review_permission_is_read_only(reader_client, conversation):
    response = reader_client.get(change_url(conversation))
    assert 'name="review_notes"' not in response.text
    assert 'name="flagged"' not in response.text
    response = reader_client.post(
        change_url(conversation), {"flagged": "on", "review_notes": "x", "reviewed": "on"}
    )
    assert response.status_code == 403
    actions = reader_client.get(reverse(CHANGELIST)).context["action_form"].fields["action"]
    names = {name for name, _ in actions.choices}
    assert {"export_json", "export_csv"} <= names
    assert not names & {"mark_reviewed", "flag", "unflag"}
    conversation.refresh_from_db()
    assert not conversation.flagged and conversation.reviewed_at is None


def test_message_content_is_never_editable(reviewer_client, conversation):
    build.exchange(conversation, "question", "answer")
    response = reviewer_client.get(change_url(conversation))
    assert 'name="review_notes"' in response.text
    for field in ("content", "title", "owner", "system_prompt", "model"):
        assert f'name="{field}"' not in response.text
    assert reviewer_client.get(reverse("admin:conversations_conversation_add")).status_code == 403


# --- the list and its filters -----------------------------------------------------------


@pytest.fixture
def corpus(user, other_user):
    """Conversations that each stand out by one thing a filter looks for."""
    now = timezone.now()
    days = lambda n: now - timedelta(days=n)  # noqa: E731
    c = {}
    c["failed"] = build.conversation(user, "failed reply", at=days(3))
    build.exchange(
        c["failed"], "q", "partial", at=days(3), status="failed",
        error={"code": "model_error", "detail": "boom"},
    )  # fmt: skip
    c["interrupted"] = build.conversation(user, "interrupted reply", at=days(2))
    build.exchange(c["interrupted"], "q", "half", at=days(2), status="interrupted")
    c["down"] = build.conversation(user, "thumbs down", at=days(1))
    _, reply = build.exchange(c["down"], "q", "a bad answer", at=days(1))
    build.rate(reply, user, Feedback.Rating.DOWN, "wrong")
    c["up"] = build.conversation(user, "thumbs up", at=days(1))
    _, reply = build.exchange(c["up"], "q", "a good answer", at=days(1))
    build.rate(reply, user, Feedback.Rating.UP)
    c["api"] = build.conversation(other_user, "from the api", source="api", model="gpt-x")
    build.exchange(c["api"], "the zebra question", "stripes")
    c["old"] = build.conversation(user, "old failure", at=days(40))
    build.exchange(c["old"], "q", "", at=days(40), status="failed")
    c["flagged"] = build.conversation(user, "flagged one", flagged=True)
    c["reviewed"] = build.conversation(user, "reviewed one", reviewed_at=now)
    return c


ALL = {
    "failed reply", "interrupted reply", "thumbs down", "thumbs up", "from the api",
    "old failure", "flagged one", "reviewed one",
}  # fmt: skip


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({}, ALL),
        ({"failed": "yes"}, {"failed reply", "interrupted reply", "old failure"}),
        ({"failed": "no"}, ALL - {"failed reply", "interrupted reply", "old failure"}),
        ({"feedback": "down"}, {"thumbs down"}),
        ({"feedback": "up"}, {"thumbs up"}),
        ({"feedback": "any"}, {"thumbs down", "thumbs up"}),
        ({"feedback": "none"}, ALL - {"thumbs down", "thumbs up"}),
        (
            {"attention": "yes"},
            {"failed reply", "interrupted reply", "old failure", "thumbs down"},
        ),
        ({"flagged__exact": "1"}, {"flagged one"}),
        ({"flagged__exact": "0"}, ALL - {"flagged one"}),
        ({"reviewed": "yes"}, {"reviewed one"}),
        ({"reviewed": "no"}, ALL - {"reviewed one"}),
        ({"source__exact": "api"}, {"from the api"}),
        ({"model__exact": "gpt-x"}, {"from the api"}),
        ({"owner": "bob"}, {"from the api"}),
        ({"owner": "BOB"}, {"from the api"}),
        ({"q": "zebra"}, {"from the api"}),  # message text
        ({"q": "thumbs"}, {"thumbs down", "thumbs up"}),  # titles
        ({"q": "bad answer"}, {"thumbs down"}),
        ({"failed": "yes", "owner": "alice"}, {"failed reply", "interrupted reply", "old failure"}),
    ],
)
def test_each_filter_and_the_search_find_the_right_conversations(
    reader_client, corpus, query, expected
):
    response = reader_client.get(reverse(CHANGELIST) + "?" + urlencode(query))
    assert titles(response) == expected


def _choice_link(response, title: str, display: str) -> str:
    changelist = response.context["cl"]
    spec = next(s for s in changelist.filter_specs if s.title == title)
    choice = next(c for c in spec.choices(changelist) if c["display"] == display)
    return choice["query_string"]


@pytest.mark.parametrize("field", ["created at", "last activity"])
def test_the_date_filters_past_7_days(reader_client, corpus, field):
    listed = reader_client.get(reverse(CHANGELIST))
    link = _choice_link(listed, field, "Past 7 days")
    assert titles(reader_client.get(reverse(CHANGELIST) + link)) == ALL - {"old failure"}


def test_the_date_hierarchy_drills_down_by_creation(reader_client, corpus):
    old = corpus["old"].created_at
    query = {"created_at__year": old.year, "created_at__month": old.month}
    found = titles(reader_client.get(reverse(CHANGELIST) + "?" + urlencode(query)))
    assert "old failure" in found
    assert all(
        c.created_at.year == old.year and c.created_at.month == old.month
        for c in Conversation.objects.filter(title__in=found)
    )


def test_the_list_shows_counts_tokens_and_the_last_reply(reader_client, corpus):
    response = reader_client.get(reverse(CHANGELIST))
    row = next(c for c in response.context["cl"].result_list if c.title == "failed reply")
    assert row.message_count == 2
    assert row.tokens_used == 15
    assert row.last_reply_status == "failed"
    empty = next(c for c in response.context["cl"].result_list if c.title == "flagged one")
    assert (empty.message_count, empty.tokens_used, empty.last_reply_status) == (0, 0, None)


def test_the_list_query_count_does_not_grow_with_rows(reader_client, user, other_user):
    def add(n):
        for i in range(n):
            conv = build.conversation(user if i % 2 else other_user, f"c{i}")
            _, reply = build.exchange(conv, "q", "a")
            build.rate(reply, user, Feedback.Rating.DOWN)

    def count_queries(query=""):
        with CaptureQueriesContext(connection) as captured:
            response = reader_client.get(reverse(CHANGELIST) + query)
        assert response.status_code == 200
        return len(captured), len(response.context["cl"].result_list)

    add(2)
    few = count_queries(), count_queries("?feedback=down&q=a")
    add(30)
    many = count_queries(), count_queries("?feedback=down&q=a")
    assert [rows for _, rows in few] == [2, 2]
    assert [rows for _, rows in many] == [32, 32]
    assert [queries for queries, _ in many] == [queries for queries, _ in few]


# --- the transcript page ----------------------------------------------------------------


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.script_text: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._in_script = tag == "script"

    def handle_endtag(self, tag):
        self._in_script = False

    def handle_data(self, data):
        if self._in_script:
            self.script_text.append(data)


PAYLOADS = [
    "<script>alert('xss-script')</script>",
    "<img src=x onerror=\"alert('xss-img')\">",
    "[click me](javascript:alert('xss-link'))",
    '<a href="javascript:alert(1)">raw link</a>',
    "![pixel](https://tracker.example/p.png)",
    '<svg onload="alert(1)"></svg>',
]


def test_a_transcript_renders_script_and_onerror_payloads_inert(
    reviewer_client, user, conversation
):
    payload = "\n\n".join(PAYLOADS)
    conversation.title = "<script>alert('xss-title')</script>"
    conversation.review_notes = "<img src=x onerror=alert('xss-notes')>"
    conversation.system_prompt = payload
    conversation.save()
    _, reply = build.exchange(
        conversation, payload, payload + "\n\n**bold** and [a link](https://example.com/x)",
        status="failed", error={"code": "model_error", "detail": payload},
    )  # fmt: skip
    build.rate(reply, user, Feedback.Rating.DOWN, payload)

    html = reviewer_client.get(change_url(conversation)).text
    parsed = _Tags()
    parsed.feed(html)
    for tag, attrs in parsed.tags:
        assert not [a for a in attrs if a.startswith("on")], (tag, attrs)
        for name in ("href", "src", "action", "formaction"):
            assert not (attrs.get(name) or "").strip().lower().startswith("javascript:"), attrs
        if tag == "img":
            assert "tracker.example" not in attrs.get("src", "")
            assert attrs.get("src") != "x"
    assert not [t for t in parsed.script_text if "xss" in t or "alert" in t]
    # The markdown of the reply is rendered, the payloads shown as text.
    assert "<strong>bold</strong>" in html
    assert '<a href="https://example.com/x" rel="noopener noreferrer nofollow">a link</a>' in html
    assert "&lt;script&gt;alert(" in html
    assert "&lt;img src=x onerror=" in html


def test_the_transcript_shows_status_model_usage_timings_errors_and_ratings(
    reader_client, user, other_user, conversation
):
    _, reply = build.exchange(
        conversation, "question", "answer", model="gpt-test", time_to_first_token_ms=321,
        duration_ms=4567, usage={"prompt_tokens": 12, "completion_tokens": 34},
        status="failed", error={"code": "chunk_timeout", "detail": "The model stopped."},
    )  # fmt: skip
    build.rate(reply, user, Feedback.Rating.DOWN, "It gave up halfway")
    html = reader_client.get(change_url(conversation)).text
    for text in (
        'data-status="failed"', "gpt-test", "12 + 34 tokens", "first token 321 ms",
        "took 4567 ms", "chunk_timeout: The model stopped.", "Thumbs down", "It gave up halfway",
        f'data-live-path="/ws/admin/conversations/{conversation.pk}/"', "review/live.js",
    ):  # fmt: skip
        assert text in html, text


def test_every_opening_of_a_transcript_is_audited(reader, reader_client, conversation):
    for _ in range(3):
        assert reader_client.get(change_url(conversation)).status_code == 200
    reader_client.get(reverse(CHANGELIST))  # the list is not a reading of a transcript
    views = list(TranscriptView.objects.order_by("viewed_at"))
    assert len(views) == 3
    assert {(v.user, v.username, v.conversation_id, v.conversation_ref, v.via) for v in views} == {
        (reader, "reader", conversation.pk, conversation.pk, "page")
    }


def test_the_audit_log_outlives_the_conversation_and_the_viewer(
    reader, reader_client, conversation
):
    reader_client.get(change_url(conversation))
    conversation_id = conversation.pk
    conversation.delete()
    reader.delete()
    view = TranscriptView.objects.get()
    assert (view.user, view.conversation, view.username) == (None, None, "reader")
    assert view.conversation_ref == conversation_id


def test_only_superusers_read_the_audit_log_and_nobody_edits_it(
    admin_client, reader_client, reviewer, conversation
):
    admin_client.get(change_url(conversation))
    view = TranscriptView.objects.get()
    listing = admin_client.get(reverse("admin:review_transcriptview_changelist"))
    assert listing.status_code == 200
    assert "admin" in listing.text
    assert (
        admin_client.get(reverse("admin:review_transcriptview_change", args=[view.pk])).status_code
        == 200
    )  # read-only view
    assert admin_client.get(reverse("admin:review_transcriptview_add")).status_code == 403
    assert (
        admin_client.post(
            reverse("admin:review_transcriptview_change", args=[view.pk]), {"username": "x"}
        ).status_code
        == 403
    )
    assert (
        admin_client.post(
            reverse("admin:review_transcriptview_delete", args=[view.pk]), {"post": "yes"}
        ).status_code
        == 403
    )
    assert admin_client.post(
        reverse("admin:review_transcriptview_changelist"),
        {"action": "delete_selected", "_selected_action": [view.pk]},
    ).status_code in (200, 302)
    assert TranscriptView.objects.filter(pk=view.pk, username="admin").exists()
    # Staff who may review conversations still may not read who else read them.
    assert reader_client.get(reverse("admin:review_transcriptview_changelist")).status_code == 403


# --- reviewing --------------------------------------------------------------------------


def review_form(**fields) -> dict:
    return {"flagged": "", "review_notes": "", "reviewed": "", **fields}


def test_a_reviewer_writes_notes_flags_and_marks_reviewed(reviewer, reviewer_client, conversation):
    before = Conversation.objects.get(pk=conversation.pk).updated_at
    response = reviewer_client.post(
        change_url(conversation),
        review_form(flagged="on", review_notes="Model refused a fair request.", reviewed="on"),
    )
    assert response.status_code == 302
    conversation.refresh_from_db()
    assert conversation.flagged
    assert conversation.review_notes == "Model refused a fair request."
    assert conversation.reviewed_by == reviewer
    assert timezone.now() - conversation.reviewed_at < timedelta(seconds=10)
    assert conversation.updated_at == before  # reviewing is not chat activity
    first_mark = conversation.reviewed_at

    # Saving again keeps the first mark; unticking clears it; unflagging unflags.
    reviewer_client.post(
        change_url(conversation), review_form(review_notes="More notes.", reviewed="on")
    )
    conversation.refresh_from_db()
    assert (conversation.reviewed_at, conversation.flagged) == (first_mark, False)
    reviewer_client.post(change_url(conversation), review_form(review_notes="Reopened."))
    conversation.refresh_from_db()
    assert (conversation.reviewed_by, conversation.reviewed_at) == (None, None)


def test_the_mark_reviewed_and_flag_actions(reviewer, reviewer_client, user):
    a, b, c = (build.conversation(user, t) for t in "abc")
    earlier = timezone.now() - timedelta(days=2)
    Conversation.objects.filter(pk=c.pk).update(reviewed_at=earlier)

    def act(action, *convs):
        return reviewer_client.post(
            reverse(CHANGELIST),
            {"action": action, "_selected_action": [str(x.pk) for x in convs]},
        )

    assert act("mark_reviewed", a, c).status_code == 302
    assert act("flag", a, b).status_code == 302
    assert act("unflag", b).status_code == 302
    got = {x.title: x for x in Conversation.objects.all()}
    assert got["a"].reviewed_by == reviewer and got["a"].reviewed_at is not None
    assert got["b"].reviewed_at is None
    assert got["c"].reviewed_at == earlier  # already reviewed: the first mark stays
    assert (got["a"].flagged, got["b"].flagged, got["c"].flagged) == (True, False, False)


# --- the usage overview -----------------------------------------------------------------


def test_the_usage_page_renders_for_staff(reader_client, corpus):
    response = reader_client.get(reverse(USAGE) + "?days=30")
    assert response.status_code == 200
    assert response.context["days"] == 30
    assert "Usage overview" in response.text
    assert 'data-user="alice"' in response.text
    assert reader_client.get(reverse(USAGE) + "?days=nonsense").context["days"] == 14
    assert reader_client.get(reverse(CHANGELIST)).text.count(reverse(USAGE)) == 1


def test_the_usage_page_pages_its_per_user_rows(reader_client, corpus, monkeypatch):
    monkeypatch.setattr("review.admin.conversations.USAGE_ROWS_PER_PAGE", 1)
    first = reader_client.get(reverse(USAGE) + "?days=7")
    pages = first.context["by_user_day"].paginator.num_pages
    assert pages == 4  # alice on three days, bob on one, within the week
    rows = [first.context["by_user_day"].object_list[0]]
    for page in range(2, pages + 1):
        response = reader_client.get(reverse(USAGE) + f"?days=7&page={page}")
        rows += list(response.context["by_user_day"].object_list)
    assert len({(r["day"], r["username"]) for r in rows}) == 4
    assert "Page 1 of 4" in first.text


# --- the whole job ----------------------------------------------------------------------


def test_find_last_weeks_failures_and_thumbs_down_read_note_review_and_export(
    reviewer, reviewer_client, corpus
):
    """Done when a staff member can find every conversation with a failed reply or a
    thumbs-down from last week, read it, note and mark it reviewed, and export it."""
    listed = reviewer_client.get(reverse(CHANGELIST) + "?attention=yes")
    last_week = _choice_link(listed, "last activity", "Past 7 days")
    found = reviewer_client.get(reverse(CHANGELIST) + last_week).context["cl"].result_list
    assert {c.title for c in found} == {"failed reply", "interrupted reply", "thumbs down"}

    for conv in found:
        page = reviewer_client.get(change_url(conv))
        assert page.status_code == 200
        reply = conv.messages.get(role=Message.Role.ASSISTANT)
        assert f'data-message-id="{reply.pk}"' in page.text
        saved = reviewer_client.post(
            change_url(conv), review_form(review_notes=f"Checked {conv.title}.", reviewed="on")
        )
        assert saved.status_code == 302

    reviewed = Conversation.objects.filter(reviewed_by=reviewer)
    assert {c.title for c in reviewed} == {c.title for c in found}
    assert all(c.review_notes == f"Checked {c.title}." for c in reviewed)

    response = reviewer_client.post(
        reverse(CHANGELIST),
        {"action": "export_json", "_selected_action": [str(c.pk) for c in found]},
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exported = json.loads(b"".join(response))
    assert {c["title"] for c in exported["conversations"]} == {c.title for c in found}
    assert all(c["reviewed_by"] == "reviewer" for c in exported["conversations"])
    audited = TranscriptView.objects.filter(user=reviewer)
    assert sorted(audited.values_list("via", flat=True)) == ["export"] * 3 + ["page"] * 3


def test_a_superuser_deletes_conversations_and_the_audit_log_stays(admin_client, user):
    doomed = build.conversation(user, "doomed")
    _, reply = build.exchange(doomed, "q", "a")
    build.rate(reply, user, Feedback.Rating.DOWN)
    admin_client.get(change_url(doomed))
    response = admin_client.post(
        reverse(CHANGELIST),
        {"action": "delete_selected", "_selected_action": [str(doomed.pk)], "post": "yes"},
    )
    assert response.status_code == 302
    assert not Conversation.objects.exists()
    assert not Message.objects.exists() and not Feedback.objects.exists()
    assert TranscriptView.objects.get().conversation_ref == doomed.pk
