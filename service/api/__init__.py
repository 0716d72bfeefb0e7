"""HTTP API: thin routers over the engine; errors are OperationOutcomes."""
