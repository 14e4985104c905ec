"""Probe kinds. To add one: write probes/<kind>.py with a Config and a Probe, then add one line
to PROBE_TYPES and one member to ProbeConfig. tests/probes/test_registry.py checks they agree.

(The table is filled in as each kind lands; see the kind modules.)
"""
