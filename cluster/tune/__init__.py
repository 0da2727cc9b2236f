"""Sweeps on Ray Tune: a spec as Tune objects, one trial, the sweep's state on storage (checked before
a resume), and the best checkpoint exported and registered."""
