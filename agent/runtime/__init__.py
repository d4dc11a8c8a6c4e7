"""Container runtime: the Protocol the agent codes against (``agent.runtime.protocol``) and its
Docker implementation (``agent.runtime.docker_runtime``)."""
