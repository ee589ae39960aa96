-- Whether one more hit (of ``cost``) fits a rate limit, counted as the ``limits`` library
-- counts it for ``strategy`` (its scripts, given as functions of KEYS and ARGV in
-- ``rate_limit``, are joined before this part by ``integration/broker/redis_enqueue.py``):
-- a fixed window is an INCR compared with the limit afterwards, as its FixedWindowRateLimiter
-- does; the others answer true or false themselves. ``current`` is the window's key,
-- ``previous`` a sliding window's previous one.
local function within_limit(strategy, current, previous, limit, window, cost, seconds)
  if strategy == 'fixed-window' then
    return tonumber(rate_limit.fixed_window({current}, {window, cost})) <= tonumber(limit)
  elseif strategy == 'moving-window' then
    return rate_limit.moving_window({current}, {seconds, limit, window, cost}) == true
  end
  return rate_limit.sliding_window({previous, current}, {limit, window, cost}) == true
end
