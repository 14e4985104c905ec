"""Name resolution as a probe sees it: the system or a configured resolver (resolver.py) over
UDP/TCP/TLS/HTTPS channels (channel.py), with stub-resolver retransmits (retransmit.py)."""
