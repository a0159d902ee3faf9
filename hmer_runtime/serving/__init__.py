"""Serving: hmer-serve's HTTP API and its micro-batcher, and the Ray service and batch job."""
