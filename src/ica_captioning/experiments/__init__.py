"""Control experiments: pseudo-label variants and statistics over seeds."""
