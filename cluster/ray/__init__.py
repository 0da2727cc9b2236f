"""Ray plumbing: joining or starting Ray, token auth, the persistent local head and its processes,
Ray console output, the cluster view, and the warm pool of model actors."""
