"""The admin transcript of conversations that hold megabytes or hostile Markdown: it opens
in bounded time, shows the start of every long text with a link to all of it, and never
hides what is stored (review/transcript.py, review/markdown.py)."""

import re
import time
from html import unescape
from html.parser import HTMLParser

import pytest
from django.urls import reverse

from review import transcript
from review.markdown import render_markdown
from review.models import TranscriptView

from .helpers import review as build
from .helpers.review import READ

pytestmark = pytest.mark.django_db


@pytest.fixture
def reader(db):
    return build.staff("reader", READ)


@pytest.fixture
def reader_client(client, reader):
    client.force_login(reader)
    return client


def change_url(conversation, page: int | None = None) -> str:
    url = reverse("admin:conversations_conversation_change", args=[conversation.pk])
    return f"{url}?page={page}" if page else url


class _Bodies(HTMLParser):
    """The transcript's messages: id → (classes of the body, its text as a reader sees it)."""

    def __init__(self):
        super().__init__()
        self.bodies: dict[str, tuple[str, str]] = {}
        self.links: list[str] = []
        self._message = None
        self._depth = 0  # open tags inside the body being read

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "a" and attrs.get("data-action") == "show-all":
            self.links.append(attrs["href"])
        if "data-message-id" in attrs:
            self._message = attrs["data-message-id"]
        elif self._depth:
            self._depth += 1
        elif self._message and attrs.get("data-part") == "body":
            self._depth = 1
            self.bodies[self._message] = (attrs["class"], "")

    def handle_endtag(self, tag):
        if self._depth:
            self._depth -= 1
            if not self._depth:
                self._message = None

    def handle_data(self, data):
        if self._depth:
            classes, text = self.bodies[self._message]
            self.bodies[self._message] = (classes, text + data)


def bodies(html: str) -> _Bodies:
    parsed = _Bodies()
    parsed.feed(html)
    return parsed


def words(text: str) -> list[str]:
    return re.findall(r"\w+", text)


# --- item 5: big transcripts --------------------------------------------------------------


def test_a_transcript_of_megabytes_opens_fast_and_links_to_every_long_text(
    reader, reader_client, user
):
    conversation = build.conversation(user, "big", system_prompt="S" * 2_000_000)
    long_texts = []
    for index in range(4):
        long_texts.append(build.message(conversation, "user", f"question {index} " * 100_000))
        long_texts.append(build.message(conversation, "assistant", f"**answer** {index} " * 80_000))
    build.exchange(conversation, "a short question", "A *short* answer.")
    stored = sum(len(m.content) for m in long_texts) + 2_000_000

    started = time.monotonic()
    response = reader_client.get(change_url(conversation))
    took = time.monotonic() - started
    assert response.status_code == 200
    # The page is bounded, not the megabytes (it took 9 s before it was).
    assert len(response.content) < stored / 10
    parsed = bodies(response.text)
    # The short reply is rendered; every long text shows its start and links to all of it.
    assert "<em>short</em>" in response.text
    for message in long_texts:
        classes, text = parsed.bodies[str(message.pk)]
        assert "tx-plain" in classes
        assert message.content.startswith(unescape(text))
        assert len(text) == transcript.PREVIEW_CHARS
    print(f"\ntranscript of {stored / 1e6:.0f} MB opened in {took:.2f} s")
    assert len(parsed.links) == len(long_texts)

    views_before = TranscriptView.objects.count()
    for message, link in zip(long_texts, parsed.links, strict=True):
        whole = reader_client.get(link)
        assert whole["Content-Type"] == "text/plain; charset=utf-8"
        assert whole["X-Content-Type-Options"] == "nosniff"
        assert whole.content.decode() == message.content
    assert TranscriptView.objects.count() == views_before + len(long_texts)
    # The system prompt too.
    prompt = re.search(r'href="([^"]+/text/system-prompt/)"', response.text).group(1)
    assert reader_client.get(prompt).content.decode() == conversation.system_prompt


def test_show_all_is_for_staff_who_may_read_and_for_messages_of_that_conversation(
    client, reader_client, user, other_user
):
    conversation = build.conversation(user, "mine")
    message = build.message(conversation, "user", "private words")
    elsewhere = build.message(build.conversation(other_user, "other"), "user", "other words")
    url = reverse("admin:conversations_conversation_text", args=[conversation.pk, message.pk])
    assert reader_client.get(url).content == b"private words"
    wrong = reverse("admin:conversations_conversation_text", args=[conversation.pk, elsewhere.pk])
    assert reader_client.get(wrong).status_code == 404
    nonsense = reverse("admin:conversations_conversation_text", args=[conversation.pk, "nope"])
    assert reader_client.get(nonsense).status_code == 404
    client.force_login(user)  # not staff
    answer = client.get(url)
    assert answer.status_code == 302 and b"private" not in answer.content


def test_hostile_markdown_in_many_long_replies_is_not_all_rendered(reader_client, user):
    """Unclosed brackets cost markdown-it ~10 µs a character: 50 such replies of 20,000
    characters took 11 s to render; the page stops rendering Markdown past its budget
    and shows the rest as text (how long the page takes: bench, not asserted here)."""
    conversation = build.conversation(user, "brackets")
    for _ in range(transcript.PAGE_MESSAGES):
        build.message(conversation, "assistant", "[" * transcript.MARKDOWN_MAX_CHARS)
    response = reader_client.get(change_url(conversation))
    parsed = bodies(response.text)
    assert len(parsed.bodies) == transcript.PAGE_MESSAGES
    # Every reply is on the page, whole, rendered or not.
    assert all(text.strip() == "[" * 20_000 for _, text in parsed.bodies.values())
    assert "Shown not rendered as Markdown" in response.text


def test_a_long_transcript_is_paged_and_only_its_last_page_is_live(reader_client, user):
    conversation = build.conversation(user, "long")
    count = transcript.PAGE_MESSAGES * 2 + 3
    for index in range(count):
        build.message(conversation, "user", f"message number {index}")
    first = reader_client.get(change_url(conversation)).text
    last = reader_client.get(change_url(conversation, page=3)).text
    assert "message number 0<" in first and f"message number {count - 1}<" not in first
    assert f"message number {count - 1}<" in last and "message number 0<" not in last
    assert len(bodies(first).bodies) == transcript.PAGE_MESSAGES
    assert len(bodies(last).bodies) == 3
    assert f"of {count}" in first and 'rel="next"' in first
    assert 'data-live-path=""' in first
    assert f'data-live-path="/ws/admin/conversations/{conversation.pk}/"' in last


def test_a_streaming_reply_is_shown_whole_for_the_live_view(reader_client, user):
    conversation = build.conversation(user, "streaming")
    reply = build.message(
        conversation, "assistant", "x" * (transcript.PREVIEW_CHARS + 5), status="streaming", seq=7
    )
    parsed = bodies(reader_client.get(change_url(conversation)).text)
    assert parsed.bodies[str(reply.pk)][1] == reply.content
    assert parsed.links == []


# --- item 6: nothing stored is hidden from staff -----------------------------------------

HIDDEN = [
    (">" * 25 + " words below the nesting limit", "deep quote"),
    ("- " * 20 + "words in a deep list", "deep list"),
    ('[label]: https://example.com/x "words in a reference title"\n\nvisible', "reference"),
]


@pytest.mark.parametrize(("source", "case"), HIDDEN, ids=[c for _, c in HIDDEN])
def test_markdown_that_would_hide_text_is_not_rendered(source, case):
    assert render_markdown(source) is None
    # What markdown-it alone makes of it: the words are gone.
    from markdown_it import MarkdownIt

    assert "words" not in MarkdownIt("commonmark").render(source)


def test_text_markdown_would_hide_is_shown_as_typed_and_stays_inert(reader_client, user):
    conversation = build.conversation(user, "hidden")
    hostile = (
        ">" * 25
        + " hidden <script>alert('xss-deep')</script> <img src=x onerror=alert('xss-deep')>"
        + " [link](javascript:alert('xss-deep'))"
    )
    replies = [build.message(conversation, "assistant", source) for source, _ in HIDDEN]
    replies.append(build.message(conversation, "assistant", hostile))
    html = reader_client.get(change_url(conversation)).text
    parsed = bodies(html)
    for reply in replies:
        classes, text = parsed.bodies[str(reply.pk)]
        assert "tx-plain" in classes
        assert words(unescape(text)) == words(reply.content)
    assert "Shown as stored: its Markdown would hide part of it." in html
    assert "<script>alert('xss-deep')" not in html
    assert "<img src=x" not in html
    assert 'href="javascript:' not in html
    assert "&lt;script&gt;alert(" in html


def test_ordinary_nesting_is_still_rendered():
    html = render_markdown("> quoted\n>\n> - a list\n>   - nested **bold**")
    assert "<blockquote>" in html and "<strong>bold</strong>" in html


def test_what_the_model_server_said_is_shown_to_staff(reader_client, reader):
    conversation = build.conversation(reader, "upstream")
    build.exchange(
        conversation,
        "hello",
        "",
        status="failed",
        error={
            "code": "model_error",
            "detail": "The model server answered with an error (HTTP 500).",
            "upstream": "InternalServerError: Error code: 500 - <b>boom</b>",
        },
    )
    page = reader_client.get(change_url(conversation)).content.decode()
    said = "The model server said: InternalServerError: Error code: 500 - &lt;b&gt;boom&lt;/b&gt;"
    assert said in page
    assert "<b>boom</b>" not in page
