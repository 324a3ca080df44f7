package redis

import goredis "github.com/redis/go-redis/v9"

// The scripts. Every one receives the partition's keys (one hash slot) and
// starts with ensureEpoch, so a partition whose keys vanished (a restart
// without persistence, FLUSHALL) starts a new epoch, with an empty stream
// and its seq from 1, as soon as anyone looks at it. Epochs stay strings:
// Lua numbers are doubles and would round them.
//
// Scripts validate before they write, so a script never fails half way; in
// Redis a script's writes are not rolled back.

// ensureEpoch: KEYS[1] stream, KEYS[2] seq, KEYS[3] epoch, KEYS[4] tip;
// ARGV[1] a fresh random epoch used only when the key is missing.
const ensureEpoch = `
local epoch = redis.call('GET', KEYS[3])
if not epoch then
  epoch = ARGV[1]
  redis.call('DEL', KEYS[1], KEYS[2], KEYS[4])
  redis.call('SET', KEYS[3], epoch)
end
local function seqof(id) return tonumber(string.match(id, '^(%d+)')) end
`

// publishScript appends one push.
//
// KEYS: 1 stream, 2 seq, 3 epoch, 4 tip, 5 state:<repo>, 6 repos, 7 push:<id>,
// 8 git:<repo>
// ARGV: 1 fresh epoch, 2 push ttl ms, 3 max stream length, 4 age cutoff ms
// (0: none), 5 now ms, 6 seed "1"/"0", 7 repo, 8 push id, 9 number of
// pairs n, then n pairs (ref, new id or "" to delete; a name starting with
// NUL is a git field and goes to KEYS[8]), then the events' JSON.
//
// Each entry's v field is the push id of the entry before it (the tip key
// remembers the last one across trimming), so a reader can tell that what
// follows its position still continues what it read.
//
// Returns {first seq, epoch, duplicate 0/1}.
var publishScript = goredis.NewScript(ensureEpoch + `
local first = redis.call('GET', KEYS[7])
if first then
  return {first, epoch, 1}
end
local last = redis.call('GET', KEYS[2])
if last then
  last = tonumber(last)
else
  -- The counter was lost but maybe not the stream (an operator deleted it,
  -- or eviction): continue after the stream's last id, which XADD demands
  -- even when trimming emptied the stream.
  last = 0
  if redis.call('EXISTS', KEYS[1]) == 1 then
    local info = redis.call('XINFO', 'STREAM', KEYS[1])
    for j = 1, #info, 2 do
      if info[j] == 'last-generated-id' then last = seqof(info[j + 1]) end
    end
  end
end
local n = tonumber(ARGV[9])
local ev = 10 + 2 * n
local count = #ARGV - ev + 1
local prev = redis.call('GET', KEYS[4]) or ''
for i = 0, count - 1 do
  redis.call('XADD', KEYS[1], string.format('%d-0', last + 1 + i), 'e', ARGV[ev + i], 'p', epoch, 't', ARGV[5], 'v', prev)
  prev = ARGV[8]
end
redis.call('SET', KEYS[2], string.format('%d', last + count))
redis.call('SET', KEYS[4], ARGV[8])

if ARGV[6] == '1' then redis.call('DEL', KEYS[5], KEYS[8]) end
for i = 0, n - 1 do
  local ref, new = ARGV[10 + 2 * i], ARGV[11 + 2 * i]
  local key = KEYS[5]
  if string.byte(ref) == 0 then key = KEYS[8] end -- a git field (bus.GitFields)
  if new == '' then
    redis.call('HDEL', key, ref)
  else
    redis.call('HSET', key, ref, new)
  end
end
if redis.call('EXISTS', KEYS[5]) == 1 then
  redis.call('SADD', KEYS[6], ARGV[7])
else
  redis.call('SREM', KEYS[6], ARGV[7])
  redis.call('DEL', KEYS[8])
end

redis.call('SET', KEYS[7], string.format('%d', last + 1), 'PX', ARGV[2])

redis.call('XTRIM', KEYS[1], 'MAXLEN', ARGV[3])
local cutoff = tonumber(ARGV[4])
if cutoff > 0 then
  -- At most 100 entries looked at per publish: bounded work.
  local old = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 100)
  local keep = nil
  for _, e in ipairs(old) do
    local t = 0
    for j = 1, #e[2], 2 do
      if e[2][j] == 't' then t = tonumber(e[2][j + 1]) end
    end
    if t >= cutoff then keep = e[1] break end
  end
  if keep == nil and old[#old] then keep = string.format('%d-0', seqof(old[#old][1]) + 1) end
  if keep then redis.call('XTRIM', KEYS[1], 'MINID', keep) end
end
return {string.format('%d', last + 1), epoch, 0}
`)

// headScript reads a partition's head.
//
// KEYS: 1 stream, 2 seq, 3 epoch, 4 tip
// ARGV: 1 fresh epoch, 2 a seq whose event JSON to return ("0": none)
//
// Returns {epoch, last seq, first retained entry id or "", event JSON or ""}.
var headScript = goredis.NewScript(ensureEpoch + `
local last = redis.call('GET', KEYS[2]) or '0'
local f = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
local first = ''
if f[1] then first = f[1][1] end
local probe = ''
if ARGV[2] ~= '0' then
  local e = redis.call('XRANGE', KEYS[1], ARGV[2] .. '-0', ARGV[2] .. '-0')
  if e[1] then
    for j = 1, #e[1][2], 2 do
      if e[1][2][j] == 'e' then probe = e[1][2][j + 1] end
    end
  end
end
return {epoch, last, first, probe}
`)

// historyScript reads events after a position, checking the epoch and the
// retained range in the same atomic step.
//
// KEYS: 1 stream, 2 seq, 3 epoch, 4 tip
// ARGV: 1 fresh epoch, 2 wanted epoch, 3 after+1 (first wanted seq), 4 limit
//
// Returns {"truncated"} or {"ok", id1, json1, id2, json2, ...}.
var historyScript = goredis.NewScript(ensureEpoch + `
if epoch ~= ARGV[2] then return {'truncated'} end
local want = tonumber(ARGV[3])
local f = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
local first
if f[1] then first = seqof(f[1][1]) else first = tonumber(redis.call('GET', KEYS[2]) or '0') + 1 end
if want < first then return {'truncated'} end
local out = {'ok'}
for _, e in ipairs(redis.call('XRANGE', KEYS[1], ARGV[3] .. '-0', '+', 'COUNT', ARGV[4])) do
  out[#out + 1] = e[1]
  for j = 1, #e[2], 2 do
    if e[2][j] == 'e' then out[#out + 1] = e[2][j + 1] end
  end
end
return out
`)

// refsScript reads a repo's state with the partition's position, atomically.
//
// KEYS: 1 stream, 2 seq, 3 epoch, 4 tip, 5 state:<repo>, 6 git:<repo>
// ARGV: 1 fresh epoch
//
// Returns {epoch, last seq, {ref1, id1, ref2, id2, ...}, {field1, value1, ...}}.
var refsScript = goredis.NewScript(ensureEpoch + `
return {epoch, redis.call('GET', KEYS[2]) or '0', redis.call('HGETALL', KEYS[5]), redis.call('HGETALL', KEYS[6])}
`)
