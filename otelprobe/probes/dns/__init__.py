"""The dns kind: one query to a server, its checks (_checks.py) and DNSSEC validation (_dnssec.py)."""
