"""Choosing a plan: the candidates, their memory and speed, the solver, exact placement, speculation and calibration."""
