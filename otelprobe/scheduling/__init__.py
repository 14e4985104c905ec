"""The scheduling layer: the prober process (runtime.py: config in, reloads, shutdown), the
scheduler that runs every target on its interval (scheduler.py), and its pure, synchronous
building blocks (stats.py: lateness; health.py: retry backoff and target health).
"""
