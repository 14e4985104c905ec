"""The TLS engine: pyOpenSSL over memory BIOs (openssl.py), client contexts and handshake
attributes (handshake.py), certificate reports (report.py) and stapled OCSP (ocsp.py)."""
