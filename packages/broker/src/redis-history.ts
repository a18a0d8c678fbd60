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
 * repeated idempotency key. Answers {0, record} (repeated), {1, id}, {2, ms to wait} (over a rate),
 * {3, what, limit} (over the plate's history budget: what = 'channels' or 'bytes') or {4} (an
 * earlier message of its batch was refused); a refusal changes nothing but its batch's mark.
 * KEYS: epoch, head, stream, marks, idempotency, rate, then the plate's history budget keys:
 *   sizes (hash: channel → bytes of its retained entries; field '' → their sum), streams (zset:
 *   channels with retained entries → when their stream expires), remembered (zset: channels with
 *   marks → when their marks expire); then the batch's mark (a string set when one of the batch's
 *   messages is refused; see broker.ts `PublishRequest.batch`).
 * ARGV: new epoch, pub/sub channel, payload mark, separator, timestamp, body, count, ageMs,
 *       markTtlMs, idempotency window ms (0 = none), channel, publish command (PUBLISH, or
 *       SPUBLISH on a cluster), the plate-wide channel (which gets the channel name, then the payload),
 *       the event name and a separator after it ('' without one; the mark then says which),
 *       what goes before the payload on pub/sub only (the volatile mark and metadata, or ''),
 *       then the plate's publish rates (broker.ts `PublishRate`): messages a second, burst, count,
 *       bytes a second, burst, bytes (both rates 0: not rated), and how long the rate key lives,
 *       then the history budget (broker.ts `HistoryBudget`): channels, bytes (0 = no limit), and
 *       the bytes counted per entry, per channel with entries and per remembered channel, then
 *       whether the message is part of a batch ('1' or '0') and how long its mark lives (ms).
 * The rate key is a hash n, b, at (tokens left as of `at`), ex (when its life was last renewed).
 * The budget keys are kept whether or not the plate has a budget, so a budget set later counts
 * what is already there.
 */
const PUBLISH = `
local idemMs = tonumber(ARGV[10])
if idemMs > 0 then
  local prior = redis.call('GET', KEYS[5])
  if prior then return {0, prior} end
end
local batched = ARGV[28] == '1'
if batched and redis.call('EXISTS', KEYS[10]) == 1 then return {4} end
local function refuse(answer)
  if batched then redis.call('SET', KEYS[10], '1', 'PX', ARGV[29]) end
  return answer
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local perS, bPerS = tonumber(ARGV[16]), tonumber(ARGV[19])
local rated = perS > 0 or bPerS > 0
local n, b, r
if rated then
  local burst, count, bBurst, bytes = tonumber(ARGV[17]), tonumber(ARGV[18]), tonumber(ARGV[20]), tonumber(ARGV[21])
  r = redis.call('HMGET', KEYS[6], 'n', 'b', 'at', 'ex')
  local elapsed = 0
  if r[3] then elapsed = math.max(0, now - tonumber(r[3])) end
  n, b = burst, bBurst
  if r[1] then n = math.min(burst, tonumber(r[1]) + elapsed * perS / 1000) end
  if r[2] then b = math.min(bBurst, tonumber(r[2]) + elapsed * bPerS / 1000) end
  local wait = 0
  if perS > 0 and n < count then wait = math.ceil((count - n) * 1000 / perS) end
  if bPerS > 0 and b < bytes then wait = math.max(wait, math.ceil((bytes - b) * 1000 / bPerS)) end
  if wait > 0 then return refuse({2, wait}) end
  if perS > 0 then n = n - count end
  if bPerS > 0 then b = b - bytes end
end
-- The budget's sweep: channels whose stream or marks expired stop counting (at most 1,000
-- streams per publish; every stream is swept once). Read here, written after the script's first
-- write: a Redis at maxmemory refuses a script only at its first write, so that one must be a
-- command that adds (a deletion first would let the rest of the script grow memory past it).
local gone = redis.call('ZRANGEBYSCORE', KEYS[8], '-inf', '(' .. now, 'LIMIT', 0, 1000)
local swept, goneHere = 0, false
if #gone > 0 then
  local sizes = redis.call('HMGET', KEYS[7], unpack(gone))
  for i = 1, #gone do
    swept = swept + (tonumber(sizes[i]) or 0)
    if gone[i] == ARGV[11] then goneHere = true end
  end
end
local forgotten = redis.call('ZCOUNT', KEYS[9], '-inf', '(' .. now)
local epoch = redis.call('GET', KEYS[1])
local head = redis.call('HMGET', KEYS[2], 'ms', 'seq')
local ms, seq = now, 0
local headMs = tonumber(head[1])
if headMs and headMs >= now then
  ms = headMs
  seq = tonumber(head[2]) + 1
end
local order = ms .. '-' .. seq
local id = (epoch or ARGV[1]) .. '_' .. order
local payload = ARGV[3] .. id .. ARGV[4] .. ARGV[5] .. ARGV[4] .. ARGV[14] .. ARGV[6]
local count = tonumber(ARGV[7])
local ageMs = tonumber(ARGV[8])
local dropped = false
-- What the trims drop, read before anything changes: the oldest \`over\` entries go by count, and
-- the first entry that stays tells whether any must go by age. XLEN is 0 only for a stream that
-- expired (or never was): trimming always keeps the newest entry. Whatever it held up to the
-- channel's last id is gone.
local len = redis.call('XLEN', KEYS[3])
if len == 0 then dropped = redis.call('HGET', KEYS[4], 'last') end
local freed, minMs = 0, false
if count > 0 and len > 0 then
  local over = len + 1 - count
  if over < 0 then over = 0 end
  local oldest = redis.call('XRANGE', KEYS[3], '-', '+', 'COUNT', over + 1)
  for i = 1, over do freed = freed + #oldest[i][2][2] + ARGV[25] end
  if over > 0 then dropped = oldest[over][1] end
  local kept = oldest[over + 1]
  local cutMs = now - ageMs
  if kept and tonumber(string.match(kept[1], '^(%d+)')) < cutMs then
    minMs = cutMs
    local aged = redis.call('XRANGE', KEYS[3], kept[1], '(' .. cutMs .. '-0')
    for i = 1, #aged do freed = freed + #aged[i][2][2] + ARGV[25] end
    dropped = aged[#aged][1]
  end
end
-- The budget: a new channel with entries, or more bytes than before, must fit.
local known = false
if not goneHere then known = tonumber(redis.call('HGET', KEYS[7], ARGV[11])) end
local size = known
if count > 0 then size = math.max(0, (known or 0) - freed) + #payload + ARGV[25] end
local budgetChannels, budgetBytes = tonumber(ARGV[23]), tonumber(ARGV[24])
if budgetChannels > 0 or budgetBytes > 0 then
  local streams = redis.call('ZCARD', KEYS[8]) - #gone
  local newStream = count > 0 and not known
  if newStream and budgetChannels > 0 and streams >= budgetChannels then return refuse({3, 'channels', budgetChannels}) end
  if budgetBytes > 0 then
    local total = (tonumber(redis.call('HGET', KEYS[7], '')) or 0) - swept
    local remembered = redis.call('ZCARD', KEYS[9]) - forgotten
    local before = total + streams * ARGV[26] + remembered * ARGV[27]
    local after = before + (size or 0) - (known or 0)
    if newStream then after = after + ARGV[26] end
    local mark = tonumber(redis.call('ZSCORE', KEYS[9], ARGV[11]))
    if not mark or mark < now then after = after + ARGV[27] end
    if after > budgetBytes and after > before then return refuse({3, 'bytes', budgetBytes}) end
  end
end
if rated then
  -- The key's life is renewed when half of it has passed, not at every publish (one command fewer).
  local ttl = tonumber(ARGV[22])
  if r[4] and now - tonumber(r[4]) < ttl / 2 then
    redis.call('HSET', KEYS[6], 'n', tostring(n), 'b', tostring(b), 'at', now)
  else
    redis.call('HSET', KEYS[6], 'n', tostring(n), 'b', tostring(b), 'at', now, 'ex', now)
    redis.call('PEXPIRE', KEYS[6], ttl)
  end
end
if not epoch then redis.call('SET', KEYS[1], ARGV[1]) end
redis.call('HSET', KEYS[2], 'ms', ms, 'seq', seq)
if #gone > 0 then
  redis.call('HDEL', KEYS[7], unpack(gone))
  redis.call('ZREM', KEYS[8], unpack(gone))
  redis.call('HINCRBY', KEYS[7], '', -swept)
end
if forgotten > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[9], '-inf', '(' .. now) end
if count > 0 then
  if minMs then redis.call('XTRIM', KEYS[3], 'MINID', minMs .. '-0') end
  redis.call('XADD', KEYS[3], 'MAXLEN', count, order, 'm', payload)
  redis.call('PEXPIRE', KEYS[3], ageMs)
  redis.call('HSET', KEYS[7], ARGV[11], size)
  redis.call('HINCRBY', KEYS[7], '', size - (known or 0))
  redis.call('ZADD', KEYS[8], now + ageMs, ARGV[11])
else
  dropped = order
end
redis.call('ZADD', KEYS[9], now + tonumber(ARGV[9]), ARGV[11])
for i = 7, 9 do redis.call('PEXPIRE', KEYS[i], ARGV[9]) end
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

/**
 * What a plate's history holds, as its budget counts it (see PUBLISH), without what expired.
 * KEYS: sizes, streams, remembered. ARGV: bytes per channel with entries, per remembered channel.
 * Answers {channels, bytes}.
 */
const HISTORY_USAGE = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local total = tonumber(redis.call('HGET', KEYS[1], '')) or 0
local gone = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. now)
for i = 1, #gone do total = total - (tonumber(redis.call('HGET', KEYS[1], gone[i])) or 0) end
local streams = redis.call('ZCARD', KEYS[2]) - #gone
local remembered = redis.call('ZCOUNT', KEYS[3], now, '+inf')
return {streams, total + streams * tonumber(ARGV[1]) + remembered * tonumber(ARGV[2])}
`;

export type PublishReply = [0, string] | [1, string] | [2, number] | [3, "channels" | "bytes", number] | [4];
export type ReadReply = [string, string, string, string | null, string | null, string, [string, string[]][]];

export interface HistoryScripts {
  platePublish(...keysAndArgs: (string | number)[]): Promise<PublishReply>;
  plateReadHistory(...keysAndArgs: string[]): Promise<ReadReply>;
  plateHistoryUsage(sizes: string, streams: string, remembered: string, streamBytes: number, rememberedBytes: number): Promise<[number, number]>;
}

/** `redis` with the history scripts defined (sent as EVALSHA, loaded on first use). */
export function withHistoryScripts<C extends Commands>(redis: C): C & HistoryScripts {
  redis.defineCommand("platePublish", { numberOfKeys: 10, lua: PUBLISH });
  redis.defineCommand("plateReadHistory", { numberOfKeys: 4, lua: READ });
  redis.defineCommand("plateHistoryUsage", { numberOfKeys: 3, lua: HISTORY_USAGE });
  return redis as C & HistoryScripts;
}
