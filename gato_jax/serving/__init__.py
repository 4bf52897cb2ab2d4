"""gato-serve: a trained Gato as an HTTP policy server (sessions, batched acting) and its client."""
