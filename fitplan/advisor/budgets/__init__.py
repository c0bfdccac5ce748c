"""CI budgets: budget files, the plan a budget predicts, and `fitplan check`."""
