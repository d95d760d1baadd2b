"""Which connections a credential.ended message ends (conversations/live/credentials.py)."""

from conversations.live.credentials import Credential

SESSION = Credential(user_id="7", session_key="k1", session_hash="h1")
OTHER_SESSION = Credential(user_id="7", session_key="k2", session_hash="h1")
KEY = Credential(user_id="7", key_id=3)
OTHER_KEY = Credential(user_id="7", key_id=4)
ALL = [SESSION, OTHER_SESSION, KEY, OTHER_KEY]


def ended(ends: dict) -> list[Credential]:
    return [c for c in ALL if c.ended_by(ends) and c.renewed_by(ends) is None]


def test_a_logout_ends_its_session_only():
    assert ended({"what": "session", "session": "k1"}) == [SESSION]


def test_a_revoked_key_ends_its_streams_only():
    assert ended({"what": "key", "key": 3}) == [KEY]


def test_deactivation_and_deletion_end_everything():
    assert ended({"what": "user"}) == ALL


def test_a_password_change_ends_other_sessions_and_renews_the_changing_one():
    ends = {"what": "password", "hash": "h2", "renew": {"from": "k1", "to": "k9"}}
    assert ended(ends) == [OTHER_SESSION]
    renewed = SESSION.renewed_by(ends)
    assert (renewed.session_key, renewed.session_hash) == ("k9", "h2")
    # Followed to its new key, a logout of the new session ends it.
    assert renewed.ended_by({"what": "session", "session": "k9"})
    # A session that already carries the new hash stays.
    assert not Credential(user_id="7", session_key="k9", session_hash="h2").ended_by(ends)
