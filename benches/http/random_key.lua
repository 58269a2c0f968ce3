-- wrk script: GET a uniformly random key of the benchmark dataset.
math.randomseed(42)
local n = tonumber(os.getenv("KEYS") or "1000000")
request = function()
  return wrk.format("GET", string.format("/v1/datasets/bench/keys/key:%012d", math.random(0, n - 1)))
end
