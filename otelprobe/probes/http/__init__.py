"""The HTTP/HTTPS probe: every phase timed at the socket, HTTP/1.1 framed by httptools, HTTP/2 by h2."""
