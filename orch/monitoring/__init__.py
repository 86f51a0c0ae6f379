"""Monitoring and self-healing: samples, alert rules and states, silences, targets and their actions."""
