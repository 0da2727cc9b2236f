"""Evaluation: model inference over sharded data with exact merged statistics, and the sections an
evaluation adds beside its core metrics."""
