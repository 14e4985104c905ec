"""The fault lab: servers that misbehave on purpose, a link emulator and labeled scenarios.

Lab servers double as the test servers of the probes (STYLE §1.6); scenarios drive them to
produce labeled telemetry for training and evaluating root-cause attribution.
"""
