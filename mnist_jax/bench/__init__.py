"""`mnist-jax bench`: what it measures (`settings`), the measurements (`measure`) and the
references they are set against (`references`), the results as files and text (`render`, `charts`),
and results of several machines side by side (`compare`)."""
