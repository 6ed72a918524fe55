"""The fedkd ClientApp: each client trains its own student on private data and shares soft labels."""
