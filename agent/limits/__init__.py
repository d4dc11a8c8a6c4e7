"""Resource limits: cgroup sampling, storage eviction, egress shaping."""
