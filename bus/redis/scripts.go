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

// ensureEpoch: KEYS[1] stream, KEYS[2] seq, KEYS[3] epoch, KEYS[4] tip,
// KEYS[5] chain; ARGV[1] a fresh random epoch used only when the key is
// missing.
//
// chainat(last) is the chain (bus.ChainNext, hex) of the history up to
// seq last, or the empty string when unknown: the chain key names the seq it belongs to,
// so one left behind by a publisher of an older version (which appends
// without chaining) is not taken for the chain of the newer entries.
const ensureEpoch = `
local epoch = redis.call('GET', KEYS[3])
if not epoch then
  epoch = ARGV[1]
  redis.call('DEL', KEYS[1], KEYS[2], KEYS[4], KEYS[5])
  redis.call('SET', KEYS[3], epoch)
end
local function seqof(id) return tonumber(string.match(id, '^(%d+)')) end
local function chainat(last)
  local c = redis.call('GET', KEYS[5])
  if not c then return '' end
  local s, h = string.match(c, '^(%d+):(%x*)$')
  if s and tonumber(s) == last then return h end
  return ''
end
local function field(fields, name)
  for j = 1, #fields, 2 do
    if fields[j] == name then return fields[j + 1] end
  end
  return nil
end
`

// publishScript appends one push.
//
// KEYS: 1 stream, 2 seq, 3 epoch, 4 tip, 5 chain, 6 state:<repo>, 7 repos,
// 8 push:<id>, 9 git:<repo>
// ARGV: 1 fresh epoch, 2 push ttl ms, 3 max stream length, 4 age cutoff ms
// (0: none), 5 now ms, 6 "1" to replace the state (a seed or a whole push)
// or "0", 7 repo, 8 push id, 9 number of
// pairs n, then n pairs (ref, new id or "" to delete; a name starting with
// NUL is a git field and goes to KEYS[8]), then the events' JSON.
//
// Each entry's v field is the push id of the entry before it (the tip key
// remembers the last one across trimming), so a reader can tell that what
// follows its position still continues what it read; its c field is the
// chain of the history before it (the chain key remembers the chain after
// the last one), so a node can tell that a client's cursor still points
// into the history the client saw (bus.ChainNext; redis.sha1hex computes
// the same SHA-1).
//
// Returns {first seq, epoch, duplicate 0/1}.
var publishScript = goredis.NewScript(ensureEpoch + `
local first = redis.call('GET', KEYS[8])
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
local chain = chainat(last)
for i = 0, count - 1 do
  redis.call('XADD', KEYS[1], string.format('%d-0', last + 1 + i), 'e', ARGV[ev + i], 'p', epoch, 't', ARGV[5], 'v', prev, 'c', chain)
  prev = ARGV[8]
  chain = string.sub(redis.sha1hex(chain .. '\n' .. ARGV[8]), 1, 16)
end
redis.call('SET', KEYS[2], string.format('%d', last + count))
redis.call('SET', KEYS[4], ARGV[8])
redis.call('SET', KEYS[5], string.format('%d:%s', last + count, chain))

if ARGV[6] == '1' then redis.call('DEL', KEYS[6], KEYS[9]) end
for i = 0, n - 1 do
  local ref, new = ARGV[10 + 2 * i], ARGV[11 + 2 * i]
  local key = KEYS[6]
  if string.byte(ref) == 0 then key = KEYS[9] end -- a git field (bus.GitFields)
  if new == '' then
    redis.call('HDEL', key, ref)
  else
    redis.call('HSET', key, ref, new)
  end
end
if redis.call('EXISTS', KEYS[6]) == 1 then
  redis.call('SADD', KEYS[7], ARGV[7])
else
  redis.call('SREM', KEYS[7], ARGV[7])
  redis.call('DEL', KEYS[9])
end

redis.call('SET', KEYS[8], string.format('%d', last + 1), 'PX', ARGV[2])

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
// KEYS: 1 stream, 2 seq, 3 epoch, 4 tip, 5 chain
// ARGV: 1 fresh epoch, 2 a seq whose event JSON to return ("0": none)
//
// Returns {epoch, last seq, first retained entry id or "", event JSON or
// "", the probed entry's c field or "?" when it has none, chain at last or
// ""}.
var headScript = goredis.NewScript(ensureEpoch + `
local last = redis.call('GET', KEYS[2]) or '0'
local f = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
local first = ''
if f[1] then first = f[1][1] end
local probe, probec = '', '?'
if ARGV[2] ~= '0' then
  local e = redis.call('XRANGE', KEYS[1], ARGV[2] .. '-0', ARGV[2] .. '-0')
  if e[1] then
    probe = field(e[1][2], 'e') or ''
    probec = field(e[1][2], 'c') or '?'
  end
end
return {epoch, last, first, probe, probec, chainat(tonumber(last))}
`)

// historyScript reads events after a position, checking the epoch and the
// retained range in the same atomic step.
//
// KEYS: 1 stream, 2 seq, 3 epoch, 4 tip, 5 chain
// ARGV: 1 fresh epoch, 2 wanted epoch, 3 after+1 (first wanted seq), 4 limit
//
// Returns {"truncated"} or {"ok", id1, json1, c1, id2, json2, c2, ...}
// where c is the entry's c field, or "?" when it has none.
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
  out[#out + 1] = field(e[2], 'e') or ''
  out[#out + 1] = field(e[2], 'c') or '?'
end
return out
`)

// refsScript reads a repo's state with the partition's position, atomically.
//
// KEYS: 1 stream, 2 seq, 3 epoch, 4 tip, 5 chain, 6 state:<repo>, 7 git:<repo>
// ARGV: 1 fresh epoch
//
// Returns {epoch, last seq, {ref1, id1, ref2, id2, ...}, chain at last or
// "", {field1, value1, ...}}.
var refsScript = goredis.NewScript(ensureEpoch + `
local last = redis.call('GET', KEYS[2]) or '0'
return {epoch, last, redis.call('HGETALL', KEYS[6]), chainat(tonumber(last)), redis.call('HGETALL', KEYS[7])}
`)
