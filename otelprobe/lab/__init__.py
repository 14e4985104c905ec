"""The fault lab: servers that misbehave on purpose, a link emulator and labeled scenarios.

Lab servers double as the test servers of the probes (STYLE §1.6); scenarios drive them to
produce labeled telemetry for training and evaluating root-cause attribution.

By concern: `faults.py` (the one table of fault types), `scenario.py` (a scenario file: vantages,
targets, timeline) and `certs.py` are shared by all;
`servers/` misbehaves at the application; `emulation/` builds network namespaces and impaired
links; `dataset/` turns scenarios into labeled recordings (and runs experiments on them);
`verification/` checks the probe's spans against the wire (packet captures).
"""
