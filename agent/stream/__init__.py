"""The agent's side of the coordinator stream.

- ``endpoint``: what the stream needs from the agent (``AgentEndpoint``) and ``ChangeBatch``;
- ``session``: connect, follow redirects, back off, register, send reports;
- ``command_queue``: commands in arrival order, their acknowledgements and results;
- ``adapter``: ``StreamAdapter``, this host behind ``AgentEndpoint`` (what it runs, what
  changed), with ``host_commands`` carrying the commands out and ``mapping`` the pure
  translations between the stream's messages and the agent's own types.

The messages and their protobuf converters are ``common.stream_*``, shared with the
coordinator.
"""
