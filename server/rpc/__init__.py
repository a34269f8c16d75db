"""The async shell around the services: where work runs, access, tokens, validation, limits, errors, metrics."""
