"""One folder per runtime: its cost model (cost.py), its session (loading and generating) and its executor."""
