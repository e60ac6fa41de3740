"""The local development environment: a real Kubernetes control plane and MinIO on 127.0.0.1.

`python -m devenv up|down|status` (or `make dev-up` / `make dev-down`) drives it; the test
fixtures in tests/conftest.py start the same environment once per test session. See
docs/development.md.
"""
