"""The built-in tools: safe, and with no network.

- ``calculator``: arithmetic, evaluated from its syntax tree (never ``eval``): numbers,
  ``+ - * / // ** %``, parentheses, and the functions and constants in ``FUNCTIONS``
  and ``CONSTANTS``, within bounds that keep one call cheap.
- ``current_time``: the time now in an IANA time zone.
- ``search_conversations``: the asking user's own saved messages, as snippets with
  their conversations' titles and ids.
"""

import ast
import json
import math
import operator
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from channels.db import database_sync_to_async
from langchain_core.tools import BaseTool, StructuredTool, ToolException
from pydantic import BaseModel, Field

EXPRESSION_CHARS = 500
# Integers past this many bits (about 3,000 digits) are refused: 9**9**9 would take
# minutes and gigabytes.
MAX_INT_BITS = 10_000
SEARCH_RESULTS = 10
SNIPPET_CHARS = 160

FUNCTIONS = {
    name: getattr(math, name)
    for name in (
        "sqrt",
        "log",
        "log10",
        "log2",
        "exp",
        "sin",
        "cos",
        "tan",
        "asin",
        "acos",
        "atan",
        "atan2",
        "sinh",
        "cosh",
        "tanh",
        "floor",
        "ceil",
        "hypot",
        "degrees",
        "radians",
    )
} | {"abs": abs, "round": round, "min": min, "max": max, "factorial": math.factorial}
CONSTANTS = {"pi": math.pi, "e": math.e, "tau": math.tau}

_BINARY = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}


def _bounded(value):
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise ToolException("The result is too large.")
    if isinstance(value, float) and not math.isfinite(value):
        raise ToolException("The result is not a finite number.")
    return value


def _power(base, exponent):
    if isinstance(base, int) and isinstance(exponent, int) and exponent > 0:
        # Bits of the result, estimated before it is computed.
        if abs(base) > 1 and exponent * abs(base).bit_length() > MAX_INT_BITS:
            raise ToolException("The result is too large.")
    return base**exponent


def _evaluate(node):
    match node:
        case ast.Expression(body=body):
            return _evaluate(body)
        case ast.Constant(value=value) if type(value) in (int, float):
            return value
        case ast.Name(id=name) if name in CONSTANTS:
            return CONSTANTS[name]
        case ast.UnaryOp(op=op, operand=operand) if type(op) in _UNARY:
            return _UNARY[type(op)](_evaluate(operand))
        case ast.BinOp(left=left, op=op, right=right) if type(op) in _BINARY:
            a, b = _evaluate(left), _evaluate(right)
            if isinstance(op, ast.Pow):
                return _bounded(_power(a, b))
            return _bounded(_BINARY[type(op)](a, b))
        case ast.Call(func=ast.Name(id=name), args=args, keywords=[]) if name in FUNCTIONS:
            values = [_evaluate(arg) for arg in args]
            if name == "factorial" and values and values[0] > 1000:
                raise ToolException("factorial() takes numbers up to 1000 here.")
            return _bounded(FUNCTIONS[name](*values))
    raise ToolException(
        "Only numbers, + - * / // ** %, parentheses and the functions "
        f"{', '.join(sorted(FUNCTIONS))} (and pi, e, tau) are allowed."
    )


def calculate(expression: str) -> str:
    """The value of an arithmetic expression, as text."""
    expression = expression.strip().replace("^", "**").replace("\u00d7", "*").replace("÷", "/")
    if len(expression) > EXPRESSION_CHARS:
        raise ToolException(f"An expression has at most {EXPRESSION_CHARS} characters.")
    try:
        tree = ast.parse(expression, mode="eval")
    except SyntaxError:
        raise ToolException(f"Not an arithmetic expression: {expression!r}.") from None
    try:
        value = _evaluate(tree)
    except ZeroDivisionError:
        raise ToolException("Division by zero.") from None
    except (ValueError, TypeError, OverflowError) as exc:
        raise ToolException(f"Cannot compute that: {exc}.") from None
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(value) if isinstance(value, float) else str(value)


class CalculatorIn(BaseModel):
    expression: str = Field(description="An arithmetic expression, e.g. (2 + 3) * sqrt(16)")


class CurrentTimeIn(BaseModel):
    timezone: str = Field("UTC", description="An IANA time zone, e.g. Europe/Paris")


class SearchIn(BaseModel):
    query: str = Field(description="Words to look for in your earlier messages")


def current_time(timezone: str = "UTC") -> str:
    try:
        zone = ZoneInfo(timezone.strip())
    except (ZoneInfoNotFoundError, ValueError):
        raise ToolException(f"Unknown time zone {timezone!r}; use an IANA name.") from None
    now = datetime.now(zone)
    return f"{now.isoformat(timespec='seconds')} ({now:%A}, {zone.key})"


def _snippet(text: str, query: str) -> str:
    at = max(text.lower().find(query.lower()), 0)
    start = max(at - SNIPPET_CHARS // 2, 0)
    piece = " ".join(text[start : start + SNIPPET_CHARS].split())
    return ("…" if start else "") + piece + ("…" if start + SNIPPET_CHARS < len(text) else "")


def search_messages(owner_id, query: str) -> str:
    """The owner's saved messages containing ``query``: JSON snippets, newest first."""
    from conversations.models import Message

    query = query.strip()
    if not query:
        raise ToolException("Say what to search for.")
    found = (
        Message.objects.filter(conversation__owner_id=owner_id, content__icontains=query)
        .select_related("conversation")
        .order_by("-created_at")[:SEARCH_RESULTS]
    )
    results = [
        {
            "conversation_id": str(message.conversation_id),
            "conversation_title": message.conversation.title,
            "role": message.role,
            "created_at": message.created_at.isoformat(timespec="seconds"),
            "snippet": _snippet(message.content, query),
        }
        for message in found
    ]
    return json.dumps({"query": query, "results": results}, ensure_ascii=False)


DESCRIPTIONS = {
    "calculator": (
        "Evaluate an arithmetic expression exactly: + - * / // ** % and parentheses, "
        "sqrt, log, sin, cos and other math functions, pi and e. Use it for any "
        "calculation instead of working it out yourself."
    ),
    "current_time": "The current date and time in an IANA time zone (default UTC).",
    "search_conversations": (
        "Search the user's own earlier conversations for words; returns snippets with "
        "each conversation's title and id."
    ),
}


def make(name: str, *, owner_id) -> BaseTool:
    """A built-in tool for one reply; ``search_conversations`` searches ``owner_id``'s
    messages only."""
    if name == "calculator":

        async def run(expression: str) -> str:
            return calculate(expression)

        schema = CalculatorIn
    elif name == "current_time":

        async def run(timezone: str = "UTC") -> str:
            return current_time(timezone)

        schema = CurrentTimeIn
    elif name == "search_conversations":

        async def run(query: str) -> str:
            return await database_sync_to_async(search_messages)(owner_id, query)

        schema = SearchIn
    else:
        raise KeyError(name)
    return StructuredTool.from_function(
        coroutine=run, name=name, description=DESCRIPTIONS[name], args_schema=schema
    )
