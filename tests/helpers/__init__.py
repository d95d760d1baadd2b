"""What the tests share: protocol rules (protocol.py), clients (ws.py, api.py), real
server processes (servers.py), review fixtures (review.py), chaos campaigns (chaos.py)."""
