"""The HTTP/HTTPS probe: socket-timed phases through httpcore's network-backend seam."""
