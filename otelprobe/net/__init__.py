"""The timed network layer every probe kind stands on: sockets timed at their events
(connection.py, stream.py, kernel_time.py), address racing (happy_eyeballs.py), name resolution
(dns/) and the TLS engine (tls/). It knows nothing of probe kinds, config files or telemetry."""
