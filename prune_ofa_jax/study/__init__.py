"""Studies: comparison tables run once for real (their results go in the README), each with a
`:test` size that the suite runs."""
