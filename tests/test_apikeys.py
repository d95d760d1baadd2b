"""API keys: how they are made, stored, checked and revoked; the settings page; the
``create_api_key`` command."""

import io
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.test import Client
from django.utils import timezone

from conversations.api.auth import key_owner
from conversations.models import ApiKey
from conversations.services.apikeys import (
    PREFIX_CHARS,
    create_api_key,
    hash_key,
    revoke_api_key,
)


def test_only_a_hash_and_a_prefix_of_a_key_are_stored(user):
    key, raw = create_api_key(owner=user, name="  backup script ")
    key.refresh_from_db()
    assert raw.startswith(key.prefix + "_")
    assert len(key.prefix) == PREFIX_CHARS
    assert len(raw) > 40
    assert key.hashed_key == hash_key(raw) != raw
    assert raw not in {str(value) for value in ApiKey.objects.values().get().values()}
    assert key.name == "backup script"
    assert create_api_key(owner=user)[1] != raw


def test_a_key_finds_its_owner_and_records_when_it_was_used(user):
    key, raw = create_api_key(owner=user)
    assert key_owner(raw) == user
    key.refresh_from_db()
    first_use = key.last_used_at
    assert first_use is not None
    key_owner(raw)
    key.refresh_from_db()
    assert key.last_used_at == first_use  # not a write on every request
    ApiKey.objects.filter(pk=key.pk).update(last_used_at=timezone.now() - timedelta(hours=1))
    key_owner(raw)
    key.refresh_from_db()
    assert timezone.now() - key.last_used_at < timedelta(minutes=1)


def test_wrong_revoked_and_inactive_keys_find_nobody(user, other_user):
    key, raw = create_api_key(owner=user)
    for wrong in ("", "nonsense", raw[:-2], raw + "x", raw.replace("chs_", "xyz_"), key.prefix):
        assert key_owner(wrong) is None
    assert not revoke_api_key(owner=other_user, key_id=key.pk)  # not theirs
    assert key_owner(raw) == user
    assert revoke_api_key(owner=user, key_id=key.pk)
    assert key_owner(raw) is None
    _, second = create_api_key(owner=user)
    user.is_active = False
    user.save()
    assert key_owner(second) is None


def test_create_api_key_prints_the_key_as_its_last_line(user):
    out = io.StringIO()
    call_command("create_api_key", "alice", "--name", "ci", stdout=out, stderr=io.StringIO())
    raw = out.getvalue().strip().splitlines()[-1]
    assert key_owner(raw) == user
    assert ApiKey.objects.get().name == "ci"
    with pytest.raises(CommandError):
        call_command("create_api_key", "nobody", stdout=io.StringIO())


def test_the_settings_page_shows_a_new_key_once_and_revokes_keys(user, other_user):
    browser = Client()
    assert browser.get("/settings/api-keys/").status_code == 302  # log in first
    browser.force_login(user)
    made = browser.post("/settings/api-keys/", {"name": "my bot"})
    assert made.status_code == 200
    assert made["Cache-Control"] == "no-store"
    raw = made.context["new_key"]
    assert key_owner(raw) == user
    assert raw in made.content.decode()

    listing = browser.get("/settings/api-keys/").content.decode()
    key = ApiKey.objects.get(owner=user)
    assert raw not in listing  # shown only once
    assert key.prefix in listing and "my bot" in listing

    theirs, _ = create_api_key(owner=other_user)
    browser.post(f"/settings/api-keys/{theirs.pk}/revoke/")
    theirs.refresh_from_db()
    assert theirs.revoked_at is None
    assert browser.get(f"/settings/api-keys/{key.pk}/revoke/").status_code == 405
    browser.post(f"/settings/api-keys/{key.pk}/revoke/")
    assert key_owner(raw) is None
    assert 'data-revoked="true"' in browser.get("/settings/api-keys/").content.decode()
