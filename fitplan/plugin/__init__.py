"""The pytest plugin's room: budgets as markers and fixtures (issue 4). Nothing is registered yet."""
