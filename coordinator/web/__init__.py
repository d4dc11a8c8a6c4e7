"""The coordinator's read-only web view: a page and the JSON it polls, served on the
metrics endpoint (common/metrics_http.py)."""
