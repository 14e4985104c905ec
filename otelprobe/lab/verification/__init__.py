"""Verification against the wire: a lab target in its own process (target.py), packet captures
with kernel timestamps (capture.py, wire.py), and the comparison of spans with them (verify.py)."""
