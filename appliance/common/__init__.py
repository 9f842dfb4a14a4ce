"""Small building blocks every part of the daemon shares, one concept per module: the
worker thread base, the backoff, atomic file replacement and process identity."""
