"""evalcluster's shared core, one package per concern (imports nothing from jobs/ or serve/).

errors.py (one-line user errors), clock.py (phase marks) and apikey.py (the scorer's key) are the few
modules every layer uses."""
