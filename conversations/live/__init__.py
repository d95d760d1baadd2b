"""The live transport, in the spirit of Zulip's zerver/tornado/: how events reach every
viewer of a conversation in any process. layer.py addresses the channel layer,
control.py holds the messages between processes (and the one listener), viewer.py is
one client's gap-free view, subscription.py and streams.py are what HTTP surfaces
stream and wait on."""
