"""Users rate replies from the chat page; staff see the ratings in the admin."""

import json

import pytest
from django.test import Client
from django.urls import reverse

from conversations.models import Message
from review.models import Feedback

from .helpers import review as build
from .helpers.review import READ

pytestmark = pytest.mark.django_db


def give(client, message, rating, comment="", **extra):
    return client.post(
        reverse("feedback-give", args=[message.pk]),
        json.dumps({"rating": rating, "comment": comment}),
        content_type="application/json",
        **extra,
    )


@pytest.fixture
def reply(conversation):
    return build.exchange(conversation, "What is 2 + 2?", "5")[1]


@pytest.fixture
def alice(client, user):
    client.force_login(user)
    return client


def test_a_user_rates_a_reply_changes_it_and_withdraws_it(alice, user, reply):
    response = give(alice, reply, -1, "  Wrong sum.  ")
    assert response.status_code == 200
    assert response.json() == {"message": str(reply.pk), "rating": -1, "comment": "Wrong sum."}
    assert Feedback.objects.get().rating == -1

    assert give(alice, reply, 1).json()["rating"] == 1
    feedback = Feedback.objects.get()  # still one per (reply, user)
    assert (feedback.rating, feedback.comment, feedback.user) == (1, "", user)

    assert give(alice, reply, None).json() == {
        "message": str(reply.pk),
        "rating": None,
        "comment": "",
    }
    assert not Feedback.objects.exists()


def test_the_chat_page_loads_the_feedback_script_and_the_users_ratings(alice, conversation, reply):
    page = alice.get(reverse("conversation", args=[conversation.pk]))
    assert page.status_code == 200
    assert "conversations/feedback.js" in page.text
    assert page.cookies.get("csrftoken") or alice.cookies.get("csrftoken")

    give(alice, reply, -1, "nope")
    listed = alice.get(reverse("feedback-list"), {"conversation": str(conversation.pk)})
    assert listed.json() == {
        "ratings": {str(reply.pk): {"message": str(reply.pk), "rating": -1, "comment": "nope"}}
    }


def test_another_users_reply_is_not_found(client, other_user, conversation, reply):
    client.force_login(other_user)
    assert give(client, reply, -1).status_code == 404
    listed = client.get(reverse("feedback-list"), {"conversation": str(conversation.pk)})
    assert listed.status_code == 404
    assert not Feedback.objects.exists()


def test_anonymous_users_are_refused(client, conversation, reply):
    assert give(client, reply, 1).status_code == 401
    listed = client.get(reverse("feedback-list"), {"conversation": str(conversation.pk)})
    assert listed.status_code == 401


def test_only_finished_assistant_replies_can_be_rated(alice, conversation, reply):
    question = reply.reply_to
    assert give(alice, question, 1).status_code == 404
    streaming = build.message(conversation, Message.Role.ASSISTANT, "so far", status="streaming")
    response = give(alice, streaming, 1)
    assert response.status_code == 409
    assert response.json()["code"] == "not_final"
    assert not Feedback.objects.exists()


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"rating": 2}, 400, "invalid_field"),
        ({"rating": "1"}, 400, "invalid_field"),
        ({"rating": True}, 400, "invalid_field"),
        ({"rating": 1, "comment": 7}, 400, "invalid_field"),
        ({"rating": 1, "comment": "x" * 2001}, 413, "comment_too_long"),
        ([1], 400, "invalid_json"),
    ],
)
def test_bad_ratings_are_refused(alice, reply, body, status, code):
    response = alice.post(
        reverse("feedback-give", args=[reply.pk]), json.dumps(body), content_type="application/json"
    )
    assert response.status_code == status
    assert response.json()["code"] == code
    assert not Feedback.objects.exists()


def test_rating_needs_the_csrf_token(user, reply):
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    assert give(client, reply, 1).status_code == 403
    client.get(reverse("conversation", args=[reply.conversation_id]))  # sets the cookie
    token = client.cookies["csrftoken"].value
    assert give(client, reply, 1, HTTP_X_CSRFTOKEN=token).status_code == 200


def test_feedback_given_in_the_ui_shows_up_in_the_admin(alice, conversation, reply):
    other = build.conversation(conversation.owner, "a fine chat")
    build.exchange(other, "hi", "hello")
    assert give(alice, reply, -1, "Two and two make four.").status_code == 200

    staff = Client()
    staff.force_login(build.staff("reader", READ))
    page = staff.get(reverse("admin:conversations_conversation_change", args=[conversation.pk]))
    assert "Thumbs down</span> by alice" in page.text
    assert "Two and two make four." in page.text
    listed = staff.get(reverse("admin:conversations_conversation_changelist"), {"feedback": "down"})
    assert [c.pk for c in listed.context["cl"].result_list] == [conversation.pk]
    ratings = staff.get(reverse("admin:review_feedback_changelist"))
    assert ratings.status_code == 200
    assert "Two and two make four." in ratings.text
