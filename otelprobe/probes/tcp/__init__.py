"""The tcp kind: connect, optional TLS or STARTTLS (_starttls.py), send/expect (probe.py)."""
