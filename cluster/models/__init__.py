"""Models: resolving a MODEL argument, loading and saving model directories (text and image), the
modality seam, the per-node cache of stored models, and attributions (tokens, pixels)."""
