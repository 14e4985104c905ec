"""Lab fault servers (DNS, TLS, HTTP): real loopback servers whose faults are set at run time.

Tests start them on 127.0.0.1:0; lab scenarios switch their faults to produce labeled data.
"""
