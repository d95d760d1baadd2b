"""Single sign-on in a real browser, against a real OpenID Connect provider on loopback
(oidc-provider-mock): the whole redirect flow — log in (the first login makes the user,
staff by a claim), log out (the provider's session too), and a login the provider
refuses. Password login is off on this worker."""

import os
import warnings

# The provider imports authlib's older API, which warns; authlib's own import makes its
# warnings always shown, so it is imported first and its filter then overridden here.
import authlib.deprecate  # noqa: F401
import httpx
import pytest
from django.contrib.auth import get_user_model
from playwright.sync_api import expect

from access.models import SecurityEvent, SsoIdentity

from .helpers.servers import start_daphne

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import oidc_provider_mock._app  # noqa: F401  (imported by the server later)
    from oidc_provider_mock import User, run_server_in_thread
from .test_browser import context  # noqa: F401
from .test_browser import pytestmark as browser_marks

pytestmark = browser_marks

CAROL = User(
    sub="carol-0001",
    claims={
        "email": "carol@example.com",
        "preferred_username": "carol",
        "groups": ["staff", "chat-admins"],
    },
)


@pytest.fixture(scope="module")
def provider():
    # The provider serves plain HTTP on loopback; authlib wants to be told that is fine.
    before = os.environ.get("AUTHLIB_INSECURE_TRANSPORT")
    os.environ["AUTHLIB_INSECURE_TRANSPORT"] = "1"
    try:
        with run_server_in_thread(user_claims=[CAROL]) as running:
            yield f"http://localhost:{running.server_port}"
    finally:
        if before is None:
            del os.environ["AUTHLIB_INSECURE_TRANSPORT"]
        else:
            os.environ["AUTHLIB_INSECURE_TRANSPORT"] = before


@pytest.fixture(scope="module")
def server(django_db_setup, django_db_blocker, provider):
    worker = start_daphne(
        env={
            "CHAT_OIDC_ISSUER": provider,
            "CHAT_OIDC_CLIENT_ID": "chatsite",
            "CHAT_OIDC_CLIENT_SECRET": "chatsite-secret",
            "CHAT_OIDC_STAFF_CLAIM": "groups=chat-admins",
            "CHAT_OIDC_LABEL": "Log in with Example ID",
            "CHAT_PASSWORD_LOGIN": "0",
        },
        name="sso-daphne",
    )
    yield worker
    worker.stop()


def start_sso(page) -> None:
    page.goto("/")
    expect(page).to_have_url("/login/?next=/")
    expect(page.locator("[name=password]")).to_have_count(0)  # password login is off
    page.get_by_role("link", name="Log in with Example ID").click()
    expect(page.get_by_role("heading", name="Authorize Client")).to_be_visible()


def test_the_first_sso_login_makes_the_user_and_logs_in(context):  # noqa: F811
    page = context.new_page()
    start_sso(page)
    page.get_by_role("button", name="carol-0001").click()
    expect(page).to_have_url("/")
    expect(page.locator(".account-name")).to_contain_text("carol")

    carol = get_user_model().objects.get(username="carol")
    assert carol.email == "carol@example.com" and carol.is_staff and not carol.is_superuser
    assert not carol.has_usable_password()
    assert SsoIdentity.objects.get(user=carol).subject == "carol-0001"
    assert SecurityEvent.objects.filter(kind="sso_login", user=carol).count() == 1

    # Logging out ends the provider's session too, then comes back to the login page.
    page.locator("[data-action=account-menu]").click()
    page.locator("[data-menu=logout]").click()
    expect(page.get_by_role("heading", name="End Session")).to_be_visible()
    page.get_by_role("button", name="End session").click()
    expect(page).to_have_url("/login/")
    page.goto("/")
    expect(page).to_have_url("/login/?next=/")

    # The next login is the same person, not a new user.
    page.get_by_role("link", name="Log in with Example ID").click()
    page.get_by_role("button", name="carol-0001").click()
    expect(page).to_have_url("/")
    assert get_user_model().objects.filter(email="carol@example.com").count() == 1
    assert SecurityEvent.objects.filter(kind="sso_login", user=carol).count() == 2


def test_a_login_the_provider_refuses_logs_nobody_in(context):  # noqa: F811
    page = context.new_page()
    start_sso(page)
    page.get_by_role("button", name="Deny").click()
    expect(page).to_have_url("/login/?sso=failed")
    expect(page.locator("[data-part=sso-failed]")).to_have_text(
        "Single sign-on did not log you in."
    )
    page.goto("/")
    expect(page).to_have_url("/login/?next=/")
    assert SecurityEvent.objects.filter(kind="sso_rejected", detail__error="access_denied").exists()


def test_a_deactivated_person_cannot_log_in_through_sso(context):  # noqa: F811
    page = context.new_page()
    start_sso(page)
    page.get_by_role("button", name="carol-0001").click()
    expect(page).to_have_url("/")
    get_user_model().objects.filter(username="carol").update(is_active=False)
    page.context.clear_cookies()
    start_sso(page)
    page.get_by_role("button", name="carol-0001").click()
    expect(page).to_have_url("/login/?sso=failed")


def test_with_password_login_off_the_admin_login_is_the_sites(server):
    with httpx.Client(base_url=server.url) as client:
        page = client.get("/admin/login/?next=/admin/")
        assert page.status_code == 302
        assert page.headers["location"] == "/login/?next=%2Fadmin%2F"
