"""The fedkd ServerApp: samples clients, aggregates their soft labels, distils the global model."""
