"""nightshift agent service: the model runtime, the fix loop and the gRPC server."""
