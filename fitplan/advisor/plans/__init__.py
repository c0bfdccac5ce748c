"""Plans as files and running them: the plan file, `fitplan.load`, export, and verify (predicted against measured)."""
