-- wrk script: GET a uniformly random key of the benchmark dataset: `key:%012d` (the prefix is
-- KEY_PREFIX, default `key:`) with the number from KEY_LO (default 0) to KEY_HI (default KEYS,
-- excluded), of dataset DATASET (default bench), with the query string QUERY after it (default
-- none, e.g. "?fields=score").
math.randomseed(42)
local n = tonumber(os.getenv("KEYS") or "1000000")
local lo = tonumber(os.getenv("KEY_LO") or "0")
local hi = tonumber(os.getenv("KEY_HI") or tostring(n))
local dataset = os.getenv("DATASET") or "bench"
local query = os.getenv("QUERY") or ""
local prefix = os.getenv("KEY_PREFIX") or "key:"
request = function()
  return wrk.format("GET", string.format("/v1/datasets/%s/keys/%s%012d%s", dataset, prefix, math.random(lo, hi - 1), query))
end
