"""Where and how a run runs: the device mesh and its shardings, JAX's distributed runtime, the
memory check made before anything is allocated, compilation (counted, and cached across runs),
and the environment a run records."""
