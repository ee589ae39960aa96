"""A lease in Redis: one holder among the workers (the reconciler, the metrics leader), taken
when free and extended while held, in one atomic step."""

from __future__ import annotations

from typing import Any

# Take or keep the lease: set when free, extended when ours.
_LEAD = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""


class Lease:
    def __init__(self, client: Any, key: str, holder: str, seconds: float) -> None:
        self.key = key
        self.holder = holder
        self.milliseconds = int(seconds * 1000)
        self._lead = client.register_script(_LEAD)

    def held(self) -> bool:
        """Whether ``holder`` holds the lease now (taking or extending it)."""
        return bool(self._lead(keys=[self.key], args=[self.holder, self.milliseconds]))
