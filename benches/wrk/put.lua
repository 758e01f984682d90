-- wrk script: the put load of `rafter-bench kv` (etcd v3 JSON API), to
-- cross-check the loader's figures with an independent one.
--
--   wrk -t2 -c64 -d10s -s benches/wrk/put.lua http://127.0.0.1:2379 -- 10000 256
--
-- Arguments: key space (default 10000), value bytes (default 256). Each
-- request puts a uniformly chosen key "key-%08d" with a value of that many
-- 'v' bytes, as `rafter-bench kv` does; bodies are encoded once, in init.
-- wrk counts non-2xx answers as "Non-2xx or 3xx responses".

local alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

local function base64(data)
  local out = {}
  for i = 1, #data, 3 do
    local a, b, c = data:byte(i, i + 2)
    local n = a * 65536 + (b or 0) * 256 + (c or 0)
    local chars = {}
    for j = 3, 0, -1 do
      local index = math.floor(n / 64 ^ j) % 64 + 1
      chars[#chars + 1] = alphabet:sub(index, index)
    end
    if not b then
      chars[3], chars[4] = "=", "="
    elseif not c then
      chars[4] = "="
    end
    out[#out + 1] = table.concat(chars)
  end
  return table.concat(out)
end

local requests = {}

function init(args)
  local keys = tonumber(args[1]) or 10000
  local value_bytes = tonumber(args[2]) or 256
  local value = base64(string.rep("v", value_bytes))
  local headers = { ["Content-Type"] = "application/json" }
  for k = 0, keys - 1 do
    local key = base64(string.format("key-%08d", k))
    local body = '{"key":"' .. key .. '","value":"' .. value .. '"}'
    requests[k + 1] = wrk.format("POST", "/v3/kv/put", headers, body)
  end
  math.randomseed(os.time())
end

function request()
  return requests[math.random(#requests)]
end
