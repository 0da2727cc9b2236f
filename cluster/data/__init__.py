"""Data access: paths and URIs as filesystems, Parquet/CSV/JSONL files, validation and fingerprints,
the packaged sample corpora, image decoding, and deterministic text perturbations."""
