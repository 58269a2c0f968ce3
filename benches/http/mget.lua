-- wrk script: POST an mget of MGET_KEYS (default 100) uniformly random keys of the benchmark
-- dataset (`key:%012d`, numbers 0 to KEYS excluded) to dataset DATASET (default bench).
math.randomseed(43)
local n = tonumber(os.getenv("KEYS") or "1000000")
local per = tonumber(os.getenv("MGET_KEYS") or "100")
local dataset = os.getenv("DATASET") or "bench"
local path = string.format("/v1/datasets/%s/mget", dataset)
local headers = { ["Content-Type"] = "application/json" }
local keys = {}
request = function()
  for i = 1, per do
    keys[i] = string.format("\"key:%012d\"", math.random(0, n - 1))
  end
  return wrk.format("POST", path, headers, "{\"keys\":[" .. table.concat(keys, ",") .. "]}")
end
