"""The plumbing every package shares: storage (local folders and fsspec URLs), atomic files, image
reading and PNG encoding, pictures, the estimator contract, registries, lazy exports, the version."""
