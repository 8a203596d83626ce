"""The shared core both products stand on: errors, logs, the validation policy, TLS, bounded
YAML, text; it imports neither product."""
