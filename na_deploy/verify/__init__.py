"""Verification (C6, C8): the gate (gate.py `run_gate` -> `GateReport`, what `na-deploy verify` runs) over
reference vs backend (bit_exact), provenance, fidelity and golden traces (gate_checks); the samples it runs on,
shards and a pool of shard processes (samples, shards, jobs); its text and JUnit forms (report_text, junit)."""
