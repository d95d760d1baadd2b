"""Limits in the admin: staff give a group or a person their own figures, and see who
is nearest their limits (the usage page)."""

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.forms.models import model_to_dict
from django.template.response import TemplateResponse
from django.urls import path

from access import audit
from access.models import SecurityEvent

from . import limits, selectors
from .models import GroupQuota, Usage, UserQuota

_LIMITS = list(limits.FIELDS)


class _LimitsAdmin(admin.ModelAdmin):
    """Every change is in the security audit log: who changed whose limits, to what."""

    def save_model(self, request, obj, form, change) -> None:
        super().save_model(request, obj, form, change)
        limits.forget()  # this worker at once; the others within limits.CACHE_S
        self.audit(request, obj, "changed" if change else "set", form.changed_data)

    def delete_model(self, request, obj) -> None:
        super().delete_model(request, obj)
        limits.forget()
        self.audit(request, obj, "removed", [])

    def audit(self, request, obj, action: str, changed: list[str]) -> None:
        values = model_to_dict(obj, fields=_LIMITS)
        audit.record(
            SecurityEvent.Kind.QUOTA_CHANGED,
            user=getattr(obj, "user", None),
            request=request,
            by=request.user.get_username(),
            quota=str(obj),
            action=action,
            changed=[name for name in changed if name in _LIMITS],
            limits=values,
        )


@admin.register(UserQuota)
class UserQuotaAdmin(_LimitsAdmin):
    list_display = ["user", *_LIMITS, "updated_at"]
    search_fields = ["user__username", "user__email"]
    autocomplete_fields = ["user"]


@admin.register(GroupQuota)
class GroupQuotaAdmin(_LimitsAdmin):
    list_display = ["group", *_LIMITS, "updated_at"]
    search_fields = ["group__name"]


@admin.register(Usage)
class UsageAdmin(admin.ModelAdmin):
    """The usage page: everyone who used tokens this month, nearest a limit first."""

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def get_urls(self):
        return [path("", self.admin_site.admin_view(self.usage), name="quotas_usage_changelist")]

    def usage(self, request):
        if not self.has_view_permission(request):
            raise PermissionDenied
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "Usage against quotas",
            "rows": selectors.nearest_limits(),
        }
        return TemplateResponse(request, "admin/quotas/usage.html", context)
