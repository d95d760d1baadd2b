"""Staff review of conversations: the admin (admin/), the audit log, ratings, exports
and the read-only live view. It builds on conversations; conversations knows nothing of
it."""
