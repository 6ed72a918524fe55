"""The fedkd ClientApp: each client trains its own student privately and shares soft labels."""
