"""Shared library of the nightshift services (config, bus, gRPC helpers, logging, stubs)."""
