"""Text that can be stored and sent: rules for what people and models write.

Two kinds of characters cannot travel through chatsite: NUL (PostgreSQL's text type
refuses it) and lone UTF-16 surrogates such as ``\\ud800`` (JSON can carry them as
escapes, but they are not Unicode: no database or UTF-8 encoder accepts them).

- What a person sends is refused with ``invalid_characters`` (400): nothing is saved
  and the client is told which field to fix.
- What a model sends is untrusted output: each such character is replaced by U+FFFD
  (the replacement character, shown as a question mark in a diamond) as it arrives,
  so the reply streams, saves and ends as usual.
"""

from . import errors

REPLACEMENT = "\ufffd"


def _encodable(text: str) -> bool:
    if text.isascii():
        return "\x00" not in text
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_text(value: str, field: str) -> str:
    """``value`` as given, or ChatError when it holds a character that cannot be stored."""
    if not _encodable(value):
        raise errors.invalid_characters(field)
    return value


def sanitize(text: str) -> str:
    """Model output made storable: NUL and unpaired surrogates become U+FFFD."""
    if _encodable(text):
        return text
    # Through UTF-16 with surrogatepass: a valid pair becomes its one character again,
    # an unpaired half becomes U+FFFD.
    fixed = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    return fixed.replace("\x00", REPLACEMENT)
