"""Workload specs: one pydantic model per workload (the only home of a default, a range or a help text),
the field types they share, the sweep search space, and reading them from YAML, JSON and options."""
