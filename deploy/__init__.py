"""Deployment: the loopback stack, the compose check and the container healthcheck."""
