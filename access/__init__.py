"""Who may get in, and for how long: login throttling, credentials whose live
connections end with them, single sign-on, and the security audit log."""
