"""Attribution: the offline brain that turns probe traces into ranked root causes (DESIGN §5, §6).

`records` reads probe spans (OTLP protobuf or OTLP JSON lines) into one flat record per probe
attempt; the rest of the package builds windows, features and models on those records. The
sidecar reuses the same modules live; nothing here imports the lab or the prober. Submodules are
imported explicitly (pandas and the model libraries are the `attribution` extra).
"""
