"""Background work: the job queue in the store, the workers that run it, recovery after a crash."""
