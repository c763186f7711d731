"""The whole pipeline for end-to-end tests (a Stack plus consumers, an index and the CLI):
in devstack.harness.pipeline, shared with bench/; re-exported here for the tests."""

from __future__ import annotations

from devstack.harness.pipeline import CLI, Pipeline, is_synced, pipeline_of

__all__ = ["CLI", "Pipeline", "is_synced", "pipeline_of"]
