"""The orchestrator: YAML workflows compiled to LangGraph runs with tools, budgets and sagas."""
