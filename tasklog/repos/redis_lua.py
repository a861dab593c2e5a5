"""The Lua script behind :class:`~tasklog.repos.redis_store.RedisRepo`.

One script with an operation name as its first argument, so that every
operation shares the helpers that keep the indexes consistent. Each call is
atomic (Redis runs one script at a time) and one round trip.

Layout under the prefix ``P`` = ``{key}:`` (one hash tag: one Cluster slot):

- ``P seq`` insertion counter; ``P rows`` hash id -> stored value;
  ``P ids`` sorted set of every id (score = id).
- ``P x:<field>:<value>`` sorted set of the ids whose ``task_name``,
  ``action`` or ``run_id`` is *value* (score = id); ``P z:<field>`` the ids
  where it is null; ``P v:<field>`` set of the values in use (task_name, action);
  ``P p:<len(task)>:<task>:<action>`` the ids of a (task_name, action) pair.
- ``P created`` sorted set id -> ``created`` (score).
- ``P r:<task>`` / ``P rz`` (no task): run_id -> id of the run's newest record.
- ``P tok`` recent batch tokens (a retried batch is written once);
  ``P feed`` capped stream, one entry per batch (the change feed);
  ``P meta`` hash (``max_size``, layout counter); ``P layouts`` hash id -> layout.

A stored value is ``<layout>|<header length>|<task_name><action><run_id><created
score><body>``: each of the four header tokens is a flag byte (0 a value, 1
null or absent, 2 not indexed), a 4-byte length and the bytes, for this script
(one ``struct.unpack``); the body is a JSON array of every field, for Python
(see :mod:`tasklog.repos.redis_codec`).
"""

from __future__ import annotations

SCRIPT = r"""
local op = ARGV[1]
local P = ARGV[2]
local ROWS, IDS, CREATED = P .. "rows", P .. "ids", P .. "created"
local SLOTS = {"task_name", "action", "run_id"}
local LISTED = {task_name = true, action = true}
local VKEYS = {P .. "v:task_name", P .. "v:action"}
local CHUNK = 1000
-- a stored value's header: per slot a flag byte (0 a value, 1 null, 2 not indexed),
-- the value's length (4 bytes, big-endian) and its bytes
local HEAD = ">BI4c0BI4c0BI4c0BI4c0"

local function num(s)
  if s == "inf" or s == "+inf" then return math.huge end
  if s == "-inf" then return -math.huge end
  return tonumber(s)
end

local function call_chunked(cmd, key, list, step)
  step = step or CHUNK
  for i = 1, #list, step do
    local j = math.min(i + step - 1, #list)
    redis.call(cmd, key, unpack(list, i, j))
  end
end

-- HMGET of any number of ids (unpack is limited to a few thousand values)
local function hmget_all(ids)
  local out = {}
  for i = 1, #ids, CHUNK do
    local values = redis.call("HMGET", ROWS, unpack(ids, i, math.min(i + CHUNK - 1, #ids)))
    for _, v in ipairs(values) do out[#out + 1] = v end
  end
  return out
end

-- ZMSCORE of any number of members
local function zmscore_all(key, members)
  local out = {}
  for i = 1, #members, CHUNK do
    local scores = redis.call("ZMSCORE", key, unpack(members, i, math.min(i + CHUNK - 1, #members)))
    for k = 1, #scores do out[i + k - 1] = scores[k] end
  end
  return out
end

-- a copy of t[i..j]
local function slice(t, i, j)
  local out = {}
  for k = i, j do out[#out + 1] = t[k] end
  return out
end

-- the header of a stored value: {task, action, run} (false = null, nil = not indexed),
-- the created score (or nil) and, when *text* is asked for, the header text
local function header(v, text)
  local pos = string.match(v, "^%d+|%d+|()")
  local f1, s1, f2, s2, f3, s3, f4, s4, after = struct.unpack(HEAD, v, pos)
  local vals = {}
  if f1 == 0 then vals[1] = s1 elseif f1 == 1 then vals[1] = false end
  if f2 == 0 then vals[2] = s2 elseif f2 == 1 then vals[2] = false end
  if f3 == 0 then vals[3] = s3 elseif f3 == 1 then vals[3] = false end
  local score = nil
  if f4 == 0 then score = s4 end
  if text then return vals, score, string.sub(v, 1, after - 1) end
  return vals, score
end

local function ikey(slot, value)
  if value then return P .. "x:" .. SLOTS[slot] .. ":" .. value end
  return P .. "z:" .. SLOTS[slot]
end

-- the (task_name, action) pair's key, when both are set
local function pkey(vals)
  if vals[1] and vals[2] then
    return P .. "p:" .. string.len(vals[1]) .. ":" .. vals[1] .. ":" .. vals[2]
  end
  return nil
end

local function rkey(task)
  if task then return P .. "r:" .. task end
  return P .. "rz"
end

local function push(t, key, a, b)
  local l = t[key]
  if not l then l = {}; t[key] = l end
  l[#l + 1] = a
  if b ~= nil then l[#l + 1] = b end
end

-- add index entries of one row to the pending groups (each key's list found once
-- per batch: values repeat from row to row)
local function index_add(g, id, vals, score)
  local sets, made = g.sets, g.made
  for slot = 1, 3 do
    local value = vals[slot]
    if value ~= nil then
      local known = made[slot]
      local list = known[value]
      if not list then
        local key = ikey(slot, value)
        list = sets[key]
        if not list then list = {}; sets[key] = list end
        known[value] = list
        if value and LISTED[SLOTS[slot]] then g.listed[VKEYS[slot]][value] = true end
      end
      local n = #list
      list[n + 1] = id
      list[n + 2] = id
    end
  end
  if score then
    local list = g.created
    local n = #list
    list[n + 1] = score
    list[n + 2] = id
  end
  local task, action = vals[1], vals[2]
  if task and action then
    local per_task = made[4][task]
    if not per_task then per_task = {}; made[4][task] = per_task end
    local list = per_task[action]
    if not list then
      local key = pkey(vals)
      list = sets[key]
      if not list then list = {}; sets[key] = list end
      per_task[action] = list
    end
    local n = #list
    list[n + 1] = id
    list[n + 2] = id
  end
  if task ~= nil and vals[3] then
    local members = g.runs[task]
    if not members then members = {}; g.runs[task] = members end
    members[vals[3]] = id
  end
end

local function flush_add(g)
  for key, list in pairs(g.sets) do call_chunked("ZADD", key, list, 2 * CHUNK) end
  if #g.created > 0 then call_chunked("ZADD", CREATED, g.created, 2 * CHUNK) end
  for key, values in pairs(g.listed) do
    local list = {}
    for value in pairs(values) do list[#list + 1] = value end
    call_chunked("SADD", key, list)
  end
  for task, members in pairs(g.runs) do
    local key = rkey(task)
    local list = {}
    for run, id in pairs(members) do list[#list + 1] = id; list[#list + 1] = run end
    for i = 1, #list, 2 * CHUNK do
      redis.call("ZADD", key, "GT", unpack(list, i, math.min(i + 2 * CHUNK - 1, #list)))
    end
  end
end

local function new_groups()
  -- sets: key -> its (score, id) list; made: per slot, value -> its set's list;
  -- [4]: task -> action -> the pair's list; created: (score, id) list of CREATED;
  -- runs: task (false: none) -> run_id -> the id of its newest record
  return {sets = {}, created = {}, runs = {}, made = {{}, {}, {}, {}},
          listed = {[VKEYS[1]] = {}, [VKEYS[2]] = {}}}
end

-- remove index entries of one row; note the runs to recompute
local function index_remove(r, id, vals, score)
  for slot = 1, 3 do
    local value = vals[slot]
    if value ~= nil then
      local key = ikey(slot, value)
      push(r.sets, key, id)
      if value and LISTED[SLOTS[slot]] then r.listed[key] = {P .. "v:" .. SLOTS[slot], value} end
    end
  end
  r.created[#r.created + 1] = id
  local pair = pkey(vals)
  if pair then push(r.sets, pair, id) end
  if vals[1] ~= nil and vals[3] then
    local runs_key = rkey(vals[1])
    r.runs[runs_key .. "\0" .. vals[3]] = {runs_key, ikey(1, vals[1]), ikey(3, vals[3]), vals[3]}
  end
end

local function new_removal()
  return {sets = {}, created = {}, listed = {}, runs = {}}
end

local function fix_run(run)
  local runs_key, task_key, run_key, run_id = run[1], run[2], run[3], run[4]
  local members = redis.call("ZREVRANGE", run_key, 0, -1)
  for _, m in ipairs(members) do
    if redis.call("ZSCORE", task_key, m) then
      redis.call("ZADD", runs_key, m, run_id)
      return
    end
  end
  redis.call("ZREM", runs_key, run_id)
end

local function flush_remove(r)
  for key, list in pairs(r.sets) do call_chunked("ZREM", key, list) end
  if #r.created > 0 then call_chunked("ZREM", CREATED, r.created) end
  for key, what in pairs(r.listed) do
    if redis.call("EXISTS", key) == 0 then redis.call("SREM", what[1], what[2]) end
  end
end

local function fix_runs(r)
  for _, run in pairs(r.runs) do fix_run(run) end
end

-- delete rows by id (when guard is given, only ids in that sorted set); returns how many
local function del_ids(list, guard)
  local r = new_removal()
  local gone = {}
  for i = 1, #list, CHUNK do
    local part = {unpack(list, i, math.min(i + CHUNK - 1, #list))}
    local values = redis.call("HMGET", ROWS, unpack(part))
    local scores = nil
    if guard then scores = redis.call("ZMSCORE", guard, unpack(part)) end
    for k, v in ipairs(values) do
      if v and (not guard or scores[k]) then
        local id = part[k]
        gone[#gone + 1] = id
        local vals, score = header(v)
        index_remove(r, id, vals, score)
      end
    end
  end
  if #gone == 0 then return 0 end
  call_chunked("HDEL", ROWS, gone)
  call_chunked("ZREM", IDS, gone)
  flush_remove(r)
  fix_runs(r)
  return #gone
end

local function enforce_cap()
  local cap = redis.call("HGET", P .. "meta", "max_size")
  if not cap then return 0 end
  local excess = redis.call("ZCARD", IDS) - tonumber(cap)
  if excess <= 0 then return 0 end
  return del_ids(redis.call("ZRANGE", IDS, 0, excess - 1))
end

if op == "add" then
  -- ARGV[3]: the call's token; ARGV[4]: the token of the call it must follow
  -- ("" for none); then n and the n stored values. Returns {first id - 1, n},
  -- {-1, 0} when the token was stored already (a retry), {-2, 0} when the call
  -- before was not stored (so what a batch leaves is always its first parts).
  -- Each row's index entries come from its value's header (as an update's do),
  -- grouped per key so that each sorted set gets one ZADD per call.
  local token, after = ARGV[3], ARGV[4]
  local TOK = P .. "tok"
  if redis.call("ZSCORE", TOK, token) then return {-1, 0} end
  if after ~= "" and not redis.call("ZSCORE", TOK, after) then return {-2, 0} end
  local n = tonumber(ARGV[5])
  local last = redis.call("INCRBY", KEYS[1], n)
  local base = last - n
  local hset, idz = {}, {}
  local g = new_groups()
  for i = 1, n do
    local id = string.format("%d", base + i)
    local v = ARGV[5 + i]
    hset[2 * i - 1] = id
    hset[2 * i] = v
    idz[2 * i - 1] = id
    idz[2 * i] = id
    local vals, score = header(v)
    index_add(g, id, vals, score)
  end
  call_chunked("HSET", ROWS, hset, 2 * CHUNK)
  call_chunked("ZADD", IDS, idz, 2 * CHUNK)
  flush_add(g)
  redis.call("ZADD", TOK, last, token)
  redis.call("ZREMRANGEBYRANK", TOK, 0, -1025)
  redis.call("XADD", P .. "feed", "MAXLEN", "~", 10000, "*", "last", last, "n", n)
  enforce_cap()
  return {base, n}
end

if op == "del" then
  -- ARGV: id, sha1 pairs; a row whose value changed since it was read is left (a conflict)
  local ids, conflicts = {}, {}
  for i = 3, #ARGV, 2 do
    local v = redis.call("HGET", ROWS, ARGV[i])
    if v then
      if redis.sha1hex(v) == ARGV[i + 1] then
        ids[#ids + 1] = ARGV[i]
      else
        conflicts[#conflicts + 1] = ARGV[i]
      end
    end
  end
  local n = del_ids(ids)
  return {n, conflicts}
end

if op == "del_guarded" then
  -- ARGV[3]: a sorted set the ids must belong to ("" for none); then ids
  local guard = ARGV[3]
  if guard == "" then guard = nil end
  return del_ids(slice(ARGV, 4, #ARGV), guard)
end

if op == "update" then
  -- ARGV: id, sha1 of the value read, new value triples
  local r = new_removal()
  local g = new_groups()
  local n, conflicts = 0, {}
  for i = 3, #ARGV, 3 do
    local id, sha, new = ARGV[i], ARGV[i + 1], ARGV[i + 2]
    local v = redis.call("HGET", ROWS, id)
    if v then
      if redis.sha1hex(v) ~= sha then
        conflicts[#conflicts + 1] = id
      else
        local old_vals, old_score, old_head = header(v, true)
        local new_vals, new_score, new_head = header(new, true)
        if old_head ~= new_head then
          index_remove(r, id, old_vals, old_score)
          index_add(g, id, new_vals, new_score)
        end
        redis.call("HSET", ROWS, id, new)
        n = n + 1
      end
    end
  end
  flush_remove(r)
  flush_add(g)
  fix_runs(r)
  return {n, conflicts}
end

if op == "sizes" then
  -- ARGV[3]: JSON {g: [[keys]...], lo, hi}; returns total, the size of each group, range count
  local spec = cjson.decode(ARGV[3])
  local out = {redis.call("ZCARD", IDS)}
  for _, keys in ipairs(spec.g) do
    local n = 0
    for _, key in ipairs(keys) do n = n + redis.call("ZCARD", key) end
    out[#out + 1] = n
  end
  if spec.lo then out[#out + 1] = redis.call("ZCOUNT", CREATED, spec.lo, spec.hi) end
  return out
end

if op == "intercard" then
  return redis.call("ZINTERCARD", #ARGV - 2, unpack(ARGV, 3))
end

if op == "range" then
  return redis.call("ZRANGEBYSCORE", CREATED, ARGV[3], ARGV[4])
end

if op == "page" then
  -- ARGV[3]: JSON {k: driver keys | ids: explicit ids, c: cursor, r: reverse, n: matches wanted,
  -- b: candidates to look at, f: filters ({k: keys} or {lo, hi}), rows: return values,
  -- o: values only (no ids)}
  -- returns {next cursor or "" when done, count, ids..., values...}
  local spec = cjson.decode(ARGV[3])
  local rev = spec.r
  local cands = {}
  local nextc = nil
  if spec.ids then
    for _, id in ipairs(spec.ids) do cands[#cands + 1] = tostring(id) end
  else
    local budget = spec.b
    local from
    if spec.c then from = "(" .. spec.c elseif rev then from = "+inf" else from = "-inf" end
    local merged = {}
    local single = #spec.k == 1
    for _, key in ipairs(spec.k) do
      local got
      if rev then
        got = redis.call("ZREVRANGEBYSCORE", key, from, "-inf", "LIMIT", 0, budget)
      else
        got = redis.call("ZRANGEBYSCORE", key, from, "+inf", "LIMIT", 0, budget)
      end
      if single then
        cands = got  -- one key: its members in order already (id text)
      else
        for _, m in ipairs(got) do merged[#merged + 1] = tonumber(m) end
      end
      if #got == budget then
        local edge = tonumber(got[#got])
        if nextc == nil or (rev and edge > nextc) or (not rev and edge < nextc) then
          nextc = edge
        end
      end
    end
    if not single then
      if rev then table.sort(merged, function(a, b) return a > b end) else table.sort(merged) end
      for _, id in ipairs(merged) do
        if nextc ~= nil and ((rev and id < nextc) or (not rev and id > nextc)) then break end
        cands[#cands + 1] = string.format("%d", id)
      end
    end
  end
  for _, f in ipairs(spec.f) do
    if #cands == 0 then break end
    local hit = {}
    for i = 1, #cands, CHUNK do
      local part = {unpack(cands, i, math.min(i + CHUNK - 1, #cands))}
      if f.k then
        for _, key in ipairs(f.k) do
          local scores = redis.call("ZMSCORE", key, unpack(part))
          for k, s in ipairs(scores) do if s then hit[i + k - 1] = true end end
        end
      else
        local scores = redis.call("ZMSCORE", CREATED, unpack(part))
        for k, s in ipairs(scores) do
          if s then
            local x = num(s)
            if x >= num(f.lo) and x <= num(f.hi) then hit[i + k - 1] = true end
          end
        end
      end
    end
    local kept = {}
    for i, id in ipairs(cands) do if hit[i] then kept[#kept + 1] = id end end
    cands = kept
  end
  if #cands > spec.n then
    local kept = {unpack(cands, 1, spec.n)}
    cands = kept
    nextc = tonumber(cands[#cands])
  end
  local out = {"", #cands}
  if nextc ~= nil then out[1] = string.format("%d", nextc) end
  if not spec.rows then return out end
  if not spec.o then
    for _, id in ipairs(cands) do out[#out + 1] = id end
  end
  for i = 1, #cands, CHUNK do
    local values = redis.call("HMGET", ROWS, unpack(cands, i, math.min(i + CHUNK - 1, #cands)))
    for _, v in ipairs(values) do out[#out + 1] = v end
  end
  return out
end

if op == "latest" then
  -- the newest row of each task (and of the records without one)
  local keys = {P .. "z:task_name"}
  for _, task in ipairs(redis.call("SMEMBERS", P .. "v:task_name")) do
    keys[#keys + 1] = ikey(1, task)
  end
  local ids = {}
  for _, key in ipairs(keys) do
    local got = redis.call("ZREVRANGE", key, 0, 0)
    if #got > 0 then ids[#ids + 1] = got[1] end
  end
  return hmget_all(ids)
end

if op == "get" then
  return hmget_all(slice(ARGV, 3, #ARGV))
end

if op == "keep" then
  -- ARGV[3]: runs to keep; ARGV[4]: "1" + task name, or "0" for records without one
  local keep = tonumber(ARGV[3])
  local task = false
  if string.sub(ARGV[4], 1, 1) == "1" then task = string.sub(ARGV[4], 2) end
  local task_key = ikey(1, task)
  local runs = redis.call("ZREVRANGE", rkey(task), 0, -1, "WITHSCORES")
  local solo = redis.call("ZINTER", 2, task_key, P .. "z:run_id", "WEIGHTS", 1, 0, "WITHSCORES")
  local all = {}
  for i = 1, #runs, 2 do all[#all + 1] = {tonumber(runs[i + 1]), runs[i], true} end
  for i = 1, #solo, 2 do all[#all + 1] = {tonumber(solo[i + 1]), solo[i], false} end
  if #all <= keep then return 0 end
  table.sort(all, function(a, b) return a[1] > b[1] end)
  local doomed = {}
  for i = keep + 1, #all do
    local item = all[i]
    if item[3] then
      local members = redis.call("ZRANGE", ikey(3, item[2]), 0, -1)
      if #members > 0 then
        local scores = zmscore_all(task_key, members)
        for k = 1, #members do
          if scores[k] then doomed[#doomed + 1] = members[k] end
        end
      end
    else
      doomed[#doomed + 1] = item[2]
    end
  end
  return del_ids(doomed)
end

if op == "layout" then
  -- ARGV[3]: a layout's JSON; returns its id (registering it when new)
  local all = redis.call("HGETALL", P .. "layouts")
  for i = 1, #all, 2 do
    if all[i + 1] == ARGV[3] then return tonumber(all[i]) end
  end
  local id = redis.call("HINCRBY", P .. "meta", "layouts", 1)
  redis.call("HSET", P .. "layouts", id, ARGV[3])
  return id
end

if op == "cap" then
  if ARGV[3] == "" then return 0 end
  redis.call("HSET", P .. "meta", "max_size", ARGV[3])
  return enforce_cap()
end

if op == "after" then
  -- ARGV[3]: position (an id), ARGV[4]: how many; returns {latest feed id, ids..., values...}
  local ids = redis.call("ZRANGEBYSCORE", IDS, "(" .. ARGV[3], "+inf", "LIMIT", 0,
                         tonumber(ARGV[4]))
  local feed = redis.call("XREVRANGE", P .. "feed", "+", "-", "COUNT", 1)
  local out = {"0-0"}
  if #feed > 0 then out[1] = feed[1][1] end
  for _, id in ipairs(ids) do out[#out + 1] = id end
  for _, v in ipairs(hmget_all(ids)) do out[#out + 1] = v end
  return out
end

return redis.error_reply("tasklog: unknown operation " .. tostring(op))
"""
