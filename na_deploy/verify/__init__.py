"""Verification (C6, C8): reference vs backend, provenance, fidelity, golden traces, shards, JUnit."""
