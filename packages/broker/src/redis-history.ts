import type { Commands } from "@plate/redis";

/*
 * The history of the Redis broker: Lua scripts, each one atomic step.
 *
 * Keys (prefix `p`, plate `a` as the hash tag `{a}`, channel `c`; see redis-names.ts):
 *   p + "epoch:{a}"                string  the plate's history epoch (created by the first script to need it)
 *   p + "history-head:{a}"         hash    ms, seq: the plate's latest position
 *   p + "history:{a}:" + c         stream  retained messages, entry id = the position's "ms-seq",
 *                                          field m = the Redis payload (as published); PEXPIRE ageMs
 *   p + "history-marks:{a}:" + c   hash    last, dropped ("ms-seq"); PEXPIRE markTtlMs
 *   p + "idem:{a}:" + owner + ":" + key  string  "id SEP timestamp SEP channel" of a publish;
 *                                          PX window (owner: the API key id, URI-encoded)
 * Every key of a script is in its plate's hash slot, so each script runs on Redis Cluster too.
 * A Redis that evicts keys (any maxmemory-policy but noeviction) breaks these guarantees.
 */

/**
 * Publishes one message and appends it to its channel's history, or answers the first publish of a
 * repeated idempotency key. Answers {0, record} (repeated) or {1, id}.
 * KEYS: epoch, head, stream, marks, idempotency, rate.
 * ARGV: new epoch, pub/sub channel, payload mark, separator, timestamp, body, count, ageMs,
 *       markTtlMs, idempotency window ms (0 = none), channel, publish command (PUBLISH, or
 *       SPUBLISH on a cluster), the plate-wide channel (which gets the channel name, then the payload),
 *       the event name and a separator after it ('' without one; the mark then says which),
 *       what goes before the payload on pub/sub only (the volatile mark and metadata, or ''),
 *       then the plate's publish rates (broker.ts `PublishRate`): messages a second, burst, count,
 *       bytes a second, burst, bytes (both rates 0: not rated), and how long the rate key lives.
 * KEYS also: the plate's rate key (hash n, b, at: tokens left as of `at`; ex: when its life was last
 * renewed). Over a rate the script
 * answers {2, ms to wait} and changes nothing.
 */
const PUBLISH = `
local idemMs = tonumber(ARGV[10])
if idemMs > 0 then
  local prior = redis.call('GET', KEYS[5])
  if prior then return {0, prior} end
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local perS, bPerS = tonumber(ARGV[16]), tonumber(ARGV[19])
if perS > 0 or bPerS > 0 then
  local burst, count, bBurst, bytes = tonumber(ARGV[17]), tonumber(ARGV[18]), tonumber(ARGV[20]), tonumber(ARGV[21])
  local r = redis.call('HMGET', KEYS[6], 'n', 'b', 'at', 'ex')
  local elapsed = 0
  if r[3] then elapsed = math.max(0, now - tonumber(r[3])) end
  local n, b = burst, bBurst
  if r[1] then n = math.min(burst, tonumber(r[1]) + elapsed * perS / 1000) end
  if r[2] then b = math.min(bBurst, tonumber(r[2]) + elapsed * bPerS / 1000) end
  local wait = 0
  if perS > 0 and n < count then wait = math.ceil((count - n) * 1000 / perS) end
  if bPerS > 0 and b < bytes then wait = math.max(wait, math.ceil((bytes - b) * 1000 / bPerS)) end
  if wait > 0 then return {2, wait} end
  if perS > 0 then n = n - count end
  if bPerS > 0 then b = b - bytes end
  -- The key's life is renewed when half of it has passed, not at every publish (one command fewer).
  local ttl = tonumber(ARGV[22])
  if r[4] and now - tonumber(r[4]) < ttl / 2 then
    redis.call('HSET', KEYS[6], 'n', tostring(n), 'b', tostring(b), 'at', now)
  else
    redis.call('HSET', KEYS[6], 'n', tostring(n), 'b', tostring(b), 'at', now, 'ex', now)
    redis.call('PEXPIRE', KEYS[6], ttl)
  end
end
local epoch = redis.call('GET', KEYS[1])
if not epoch then
  epoch = ARGV[1]
  redis.call('SET', KEYS[1], epoch)
end
local head = redis.call('HMGET', KEYS[2], 'ms', 'seq')
local ms, seq = now, 0
local headMs = tonumber(head[1])
if headMs and headMs >= now then
  ms = headMs
  seq = tonumber(head[2]) + 1
end
redis.call('HSET', KEYS[2], 'ms', ms, 'seq', seq)
local order = ms .. '-' .. seq
local id = epoch .. '_' .. order
local payload = ARGV[3] .. id .. ARGV[4] .. ARGV[5] .. ARGV[4] .. ARGV[14] .. ARGV[6]
local count = tonumber(ARGV[7])
local ageMs = tonumber(ARGV[8])
local dropped = false
-- XLEN is 0 only for a stream that expired (or never was): trimming always keeps the newest entry.
-- Whatever it held up to the channel's last id is gone.
local len = redis.call('XLEN', KEYS[3])
if len == 0 then dropped = redis.call('HGET', KEYS[4], 'last') end
if count > 0 then
  -- One read serves both trims: the oldest \`over\` entries go by count, and the first entry that
  -- stays tells whether any must go by age.
  local over = len + 1 - count
  if over < 0 then over = 0 end
  if len > 0 then
    local oldest = redis.call('XRANGE', KEYS[3], '-', '+', 'COUNT', over + 1)
    if over > 0 then dropped = oldest[over][1] end
    local kept = oldest[over + 1]
    local minMs = now - ageMs
    if kept and tonumber(string.match(kept[1], '^(%d+)')) < minMs then
      local older = redis.call('XREVRANGE', KEYS[3], '(' .. minMs .. '-0', '-', 'COUNT', 1)
      if older[1] then dropped = older[1][1] end
      redis.call('XTRIM', KEYS[3], 'MINID', minMs .. '-0')
    end
  end
  redis.call('XADD', KEYS[3], 'MAXLEN', count, order, 'm', payload)
  redis.call('PEXPIRE', KEYS[3], ageMs)
else
  dropped = order
end
if dropped then
  redis.call('HSET', KEYS[4], 'last', order, 'dropped', dropped)
else
  redis.call('HSET', KEYS[4], 'last', order)
end
redis.call('PEXPIRE', KEYS[4], ARGV[9])
local live = ARGV[15] .. payload
redis.call(ARGV[12], ARGV[2], live)
redis.call(ARGV[12], ARGV[13], ARGV[11] .. live)
if idemMs > 0 then
  redis.call('SET', KEYS[5], id .. ARGV[4] .. ARGV[5] .. ARGV[4] .. ARGV[11], 'PX', idemMs)
end
return {1, id}
`;

/**
 * Reads, in one step, what the resume rules (history.ts) need: the epoch, the plate's head, the
 * channel's marks, the time, and the retained entries after a position.
 * KEYS: epoch, head, stream, marks. ARGV: new epoch, "ms-seq" to read after ('' = read nothing).
 * Answers {epoch, head ms, head seq, last, dropped, now ms, entries} (false for absent values).
 */
const READ = `
local epoch = redis.call('GET', KEYS[1])
if not epoch then
  epoch = ARGV[1]
  redis.call('SET', KEYS[1], epoch)
end
local head = redis.call('HMGET', KEYS[2], 'ms', 'seq')
local marks = redis.call('HMGET', KEYS[4], 'last', 'dropped')
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local entries = {}
if ARGV[2] ~= '' then entries = redis.call('XRANGE', KEYS[3], '(' .. ARGV[2], '+') end
return {epoch, head[1] or '0', head[2] or '0', marks[1], marks[2], tostring(now), entries}
`;

export type PublishReply = [0, string] | [1, string] | [2, number];
export type ReadReply = [string, string, string, string | null, string | null, string, [string, string[]][]];

export interface HistoryScripts {
  platePublish(...keysAndArgs: (string | number)[]): Promise<PublishReply>;
  plateReadHistory(...keysAndArgs: string[]): Promise<ReadReply>;
}

/** `redis` with the history scripts defined (sent as EVALSHA, loaded on first use). */
export function withHistoryScripts<C extends Commands>(redis: C): C & HistoryScripts {
  redis.defineCommand("platePublish", { numberOfKeys: 6, lua: PUBLISH });
  redis.defineCommand("plateReadHistory", { numberOfKeys: 4, lua: READ });
  return redis as C & HistoryScripts;
}
