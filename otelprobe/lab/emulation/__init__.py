"""Link emulation: network namespaces (netns.py), veth links with loss, delay and rate
(link.py, _shaper.py, _forwarder.py), and the lab topology of servers behind them (topology.py)."""
