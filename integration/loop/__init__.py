"""The self-healing loop: built-in types, stages, rules, thresholds, executors."""
