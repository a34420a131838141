"""The agents: ``agent`` (one Ray actor per agent, its role prompt), ``pool`` (a role's agents,
autoscaled by ``scaling``, chosen by ``balancer``) and ``leases`` (the orchestrator's side of
borrowing an agent for one microtask). Uses ``actors.llm`` for model calls."""
