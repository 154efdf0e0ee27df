"""Training: the engine's run loop and step, the methods, evaluation, results and logs."""
