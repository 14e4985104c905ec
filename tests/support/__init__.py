"""Helpers shared by the tests (servers, processes, data builders), imported as `tests.support.<module>`.

Nothing here is collected as a test. Fault servers a user could point the prober at live in
otelprobe.lab.servers; what stays here has no lab equivalent (each module says why)."""
