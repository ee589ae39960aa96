"""The status store: records, history, indexes, claims, Lua scripts, connections."""
