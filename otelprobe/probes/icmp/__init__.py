"""The icmp kind: echo probes (probe.py) over ICMP sockets (_socket.py, _packet.py), and the
traceroute other kinds attach on failure (traceroute.py, path_trace.py)."""
