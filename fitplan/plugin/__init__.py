"""The pytest plugin: budgets as markers and fixtures (entry point pytest11 `fitplan` -> pytest_plugin)."""
