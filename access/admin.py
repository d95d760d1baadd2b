"""The audit log and the SSO links in the admin: superusers read them; nobody adds or
edits them there."""

from django.contrib import admin

from .models import SecurityEvent, SsoIdentity


class _SuperusersRead(admin.ModelAdmin):
    show_facets = admin.ShowFacets.NEVER

    def has_module_permission(self, request) -> bool:
        return self.has_view_permission(request)

    def has_view_permission(self, request, obj=None) -> bool:
        return bool(request.user.is_active and request.user.is_superuser)

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(SecurityEvent)
class SecurityEventAdmin(_SuperusersRead):
    list_display = ["at", "kind", "username", "user", "address", "detail"]
    list_filter = ["kind", ("user", admin.RelatedOnlyFieldListFilter), "at"]
    search_fields = ["username", "user__username", "address"]
    date_hierarchy = "at"
    list_select_related = ["user"]
    readonly_fields = ["at", "kind", "user", "username", "address", "detail"]
    actions = None

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(SsoIdentity)
class SsoIdentityAdmin(_SuperusersRead):
    """Who logs in through single sign-on as whom; deleting a row unlinks the person
    (their next login makes a new user)."""

    list_display = ["user", "subject", "issuer", "created_at"]
    search_fields = ["user__username", "subject"]
    list_select_related = ["user"]
    readonly_fields = ["user", "issuer", "subject", "created_at"]
