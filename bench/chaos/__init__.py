"""The chaos suite: whole-gateway fault scenarios with figures (issue 8).

``python -m bench.chaos`` (``make chaos``) runs every scenario and writes bench/CHAOS.md;
``pytest tests/chaos`` runs the CI share. `bench.chaos.rig` builds the gateway, simulator and
emulator in virtual time and measures; `bench.chaos.scenarios` holds the fault scripts and
their pass criteria; `bench.chaos.sigkill` is the real-process SIGKILL scenario.
"""
