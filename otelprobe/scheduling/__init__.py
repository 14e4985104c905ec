"""Building blocks of the scheduler: lateness statistics, retry backoff and target health.

`otelprobe.scheduler` composes them; each module here is pure and synchronous, so it is tested
without an event loop.
"""
