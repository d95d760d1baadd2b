"""Webhooks: each user's endpoints hear, by signed HTTP POSTs, of their replies' final
states and of their conversations being created and deleted.

The core calls only ``outbox`` (inside its own transactions) and ``outbox.start_delivery``;
everything else — endpoints, signing, the delivery loop, the log, the pages and the
API — lives here.
"""
