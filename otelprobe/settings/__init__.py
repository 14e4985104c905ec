"""Settings models every layer above shares: durations, addresses, secrets, and the per-target
base (schedule, retries, IP family, TLS, resolver). Below the network layer so that net/, probes/
and config/ all import it and it imports none of them."""
