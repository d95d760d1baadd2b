"""Commands: serve, create_user, create_api_key, ensure_login, sweep_replies."""
