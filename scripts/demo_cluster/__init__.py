"""The `make demo` cluster: processes under .run/demo/, a load generator, progress and summary.

Used by scripts/demo.py only; nothing here imports from tests/.
"""
