"""Events as JSON text: every frame of every reply is encoded once, by ``events.dumps``."""

import json

from conversations import events


def test_frames_are_the_same_compact_json_text_as_the_standard_library_writes():
    samples = [
        {"type": "token", "message": "8a7b", "seq": 42, "text": ' héllo 😀 "quoted"\n'},
        {"type": "message.completed", "message": {"id": "8a7b", "usage": None, "n": 1.5}},
        {"type": "tool.started", "call": {"args": {"expression": "2+2"}, "nested": [1, [2]]}},
    ]
    for event in samples:
        text = events.dumps(event)
        assert text == json.dumps(event, ensure_ascii=False, separators=(",", ":"))
        assert json.loads(text) == events.loads(text) == event


def test_what_the_fast_encoder_refuses_is_still_encoded():
    """A lone surrogate never reaches the live path (it is replaced as it arrives), but
    an event holding one still encodes rather than failing the reply."""
    event = {"type": "token", "text": "a\ud800b"}
    assert json.loads(events.dumps(event)) == event
    assert events.loads(events.dumps(event)) == event
