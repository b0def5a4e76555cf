"""Data: sources by name and the seeded split (sources), a source's rows (dataset), image folders and CIFAR-10 files (images), and the input normalization (normalization)."""
