"""``{% quota_usage %}``: the person's tokens against their limits, for the chat page."""

from django import template

from .. import selectors

register = template.Library()


@register.inclusion_tag("quotas/_usage.html", takes_context=True)
def quota_usage(context) -> dict:
    user = context["request"].user
    return {"standing": selectors.standing_of(user) if user.is_authenticated else None}
