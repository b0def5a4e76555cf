"""Bundle I/O: the bundle and its files (hashes, pickle-free npz, atomic folder writes), the provenance of what is audited, and the per-sample predictions file. Torch-free."""
