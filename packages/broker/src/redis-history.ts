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
 * KEYS: epoch, head, stream, marks, idempotency, then
 *   the plate's publish state, a small hash of its rate buckets, 'n', 'b', 'at' (tokens left as
 *     of `at`), and of its history budget's counts: '' → the bytes of its channels' retained
 *     entries, '#' → how many channels have entries, 'm' → how many channels 'published' holds
 *     (their marks are kept), 'cut' → streams whose last publish is at or before it were swept,
 *     'sw' → when the last sweep ran; 'ex' → when its life was last renewed;
 *   sizes, a hash: channel → bytes of its retained entries (apart from the state, which stays
 *     small: a small hash is a list that each field read scans);
 *   published, a zset: channel → its last publish (ms): its stream lives `ageMs` after, its marks
 *     `markTtlMs`;
 *   idempotency keys, a zset: the key of each publish's idempotency record → when it lapses
 *     (the state's 'k' counts them);
 *   then the batch's mark (a string set when one of the batch's messages is refused; see broker.ts
 *   `PublishRequest.batch`).
 * ARGV: new epoch, pub/sub channel, payload mark, separator, timestamp, body, count, ageMs,
 *       markTtlMs, idempotency window ms (0 = none), channel, publish command (PUBLISH, or
 *       SPUBLISH on a cluster), the plate-wide channel (which gets the channel name, then the payload),
 *       the event name and a separator after it ('' without one; the mark then says which),
 *       what goes before the payload on pub/sub only (the volatile mark and metadata, or ''),
 *       then the plate's publish rates (broker.ts `PublishRate`): messages a second, burst, count,
 *       bytes a second, burst, bytes (both rates 0: not rated), and how long a full bucket takes
 *       to fill (ms: the state lives at least that long), then the history budget (broker.ts `HistoryBudget`): '1' to keep its counts (a plate
 *       with a budget) or '0', channels, bytes (0 = no limit), the bytes counted per entry, per
 *       channel with entries and per remembered channel, and how often expired channels are
 *       swept (ms), then whether the message is part of a batch ('1' or '0') and how long its mark
 *       lives (ms), then the bytes counted per idempotency record.
 *
 * Rates and budget cost five commands a publish together, one more with an idempotency key:
 * HMGET and HSET of the state, HGET and HSET of the channel's size, ZADD of its last publish. The
 * sweep of expired channels (streams whose size stops counting, marks that stop being remembered)
 * runs at most every sweep period, or at once before the budget would refuse; the state's life is
 * renewed when half of it has passed.
 */
const PUBLISH = `
local batched = ARGV[29] == '1'
if batched and redis.call('EXISTS', KEYS[10]) == 1 then return {4} end
local function refuse(answer)
  if batched then redis.call('SET', KEYS[10], '1', 'PX', ARGV[30]) end
  return answer
end
local idemMs = tonumber(ARGV[10])
if idemMs > 0 then
  local prior = redis.call('GET', KEYS[5])
  if prior then return {0, prior} end
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local perS, bPerS = tonumber(ARGV[16]), tonumber(ARGV[19])
local rated = perS > 0 or bPerS > 0
local accounted = ARGV[23] == '1'
-- The state: 1 n, 2 b, 3 at, 4 total bytes, 5 streams, 6 cut, 7 swept at, 8 renewed at, 9 remembered, 10 idempotency keys.
local z
if rated or accounted then z = redis.call('HMGET', KEYS[6], 'n', 'b', 'at', '', '#', 'cut', 'sw', 'ex', 'm', 'k') end
local channelSize
if accounted then channelSize = tonumber(redis.call('HGET', KEYS[7], ARGV[11])) end
local n, b
if rated then
  local burst, takeN, bBurst, takeB = tonumber(ARGV[17]), tonumber(ARGV[18]), tonumber(ARGV[20]), tonumber(ARGV[21])
  local elapsed = 0
  if z[3] then elapsed = math.max(0, now - tonumber(z[3])) end
  n, b = burst, bBurst
  if z[1] then n = math.min(burst, tonumber(z[1]) + elapsed * perS / 1000) end
  if z[2] then b = math.min(bBurst, tonumber(z[2]) + elapsed * bPerS / 1000) end
  local wait = 0
  if perS > 0 and n < takeN then wait = math.ceil((takeN - n) * 1000 / perS) end
  if bPerS > 0 and b < takeB then wait = math.max(wait, math.ceil((takeB - b) * 1000 / bPerS)) end
  if wait > 0 then return refuse({2, wait}) end
  if perS > 0 then n = n - takeN end
  if bPerS > 0 then b = b - takeB end
end
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
local markMs = tonumber(ARGV[9])
local dropped = false
-- What the trims drop, read before anything changes: the oldest \`over\` entries go by count, and
-- the first entry that stays tells whether any must go by age. XLEN is 0 only for a stream that
-- expired (or never was): trimming always keeps the newest entry. Whatever it held up to the
-- channel's last id is gone.
local len = redis.call('XLEN', KEYS[3])
if len == 0 then dropped = redis.call('HGET', KEYS[4], 'last') end
local entryBytes = tonumber(ARGV[26])
local freed, minMs = 0, false
if count > 0 and len > 0 then
  local over = len + 1 - count
  if over < 0 then over = 0 end
  local oldest = redis.call('XRANGE', KEYS[3], '-', '+', 'COUNT', over + 1)
  for i = 1, over do freed = freed + #oldest[i][2][2] + entryBytes end
  if over > 0 then dropped = oldest[over][1] end
  local kept = oldest[over + 1]
  local cutMs = now - ageMs
  if kept and tonumber(string.match(kept[1], '^(%d+)')) < cutMs then
    minMs = cutMs
    local aged = redis.call('XRANGE', KEYS[3], kept[1], '(' .. cutMs .. '-0')
    for i = 1, #aged do freed = freed + #aged[i][2][2] + entryBytes end
    dropped = aged[#aged][1]
  end
end
-- The budget. Its counts as they are, then, when due (or to spare a refusal), the sweep's effect:
-- channels whose stream expired since the last cut stop counting, and marks past their life.
local known, size, total, streams, remembered, idems
local sweep = false
local function plan()
  local upTo = now - ageMs
  local gone = redis.call('ZRANGEBYSCORE', KEYS[8], '(' .. (tonumber(z[6]) or 0), upTo, 'WITHSCORES', 'LIMIT', 0, 1000)
  local names = {}
  for i = 1, #gone, 2 do names[#names + 1] = gone[i] end
  local p = {cut = upTo, freed = 0, streams = 0, here = false, sized = {}}
  -- Cut short at 1,000: the next sweep goes on from the last one read (read again, counted once).
  if #names == 1000 then p.cut = tonumber(gone[#gone]) - 1 end
  if #names > 0 then
    local sizes = redis.call('HMGET', KEYS[7], unpack(names))
    for i = 1, #names do
      local sz = tonumber(sizes[i])
      if sz then
        p.freed = p.freed + sz
        p.streams = p.streams + 1
        p.sized[#p.sized + 1] = names[i]
        if names[i] == ARGV[11] then p.here = true end
      end
    end
  end
  p.forgotten = redis.call('ZCOUNT', KEYS[8], '-inf', '(' .. (now - markMs))
  p.lapsed = redis.call('ZCOUNT', KEYS[9], '-inf', '(' .. now)
  return p
end
local function weigh()
  known = channelSize
  total = tonumber(z[4]) or 0
  streams = tonumber(z[5]) or 0
  remembered = tonumber(z[9]) or 0
  idems = tonumber(z[10]) or 0
  if sweep then
    idems = idems - sweep.lapsed
    if sweep.here then known = nil end
    total = total - sweep.freed
    streams = streams - sweep.streams
    remembered = remembered - sweep.forgotten
  end
  size = known
  if count > 0 then size = math.max(0, (known or 0) - freed) + #payload + entryBytes end
  local budgetChannels, budgetBytes = tonumber(ARGV[24]), tonumber(ARGV[25])
  local newStream = count > 0 and not known
  if newStream and budgetChannels > 0 and streams >= budgetChannels then return {3, 'channels', budgetChannels} end
  if budgetBytes > 0 then
    local streamBytes, markBytes = tonumber(ARGV[27]), tonumber(ARGV[28])
    local idemBytes = tonumber(ARGV[32])
    local before = total + streams * streamBytes + remembered * markBytes + idems * idemBytes
    local after = before + (size or 0) - (known or 0)
    if idemMs > 0 then after = after + idemBytes end
    if newStream then after = after + streamBytes + markBytes end
    if after > budgetBytes and after > before then return {3, 'bytes', budgetBytes} end
  end
  return false
end
if accounted then
  if now - (tonumber(z[7]) or 0) >= tonumber(ARGV[31]) then sweep = plan() end
  local refusal = weigh()
  if refusal and not sweep then
    sweep = plan()
    refusal = weigh()
  end
  if refusal then return refuse(refusal) end
end
if not epoch then redis.call('SET', KEYS[1], ARGV[1]) end
redis.call('HSET', KEYS[2], 'ms', ms, 'seq', seq)
if count > 0 then
  if minMs then redis.call('XTRIM', KEYS[3], 'MINID', minMs .. '-0') end
  redis.call('XADD', KEYS[3], 'MAXLEN', count, order, 'm', payload)
  redis.call('PEXPIRE', KEYS[3], ageMs)
else
  dropped = order
end
if rated or accounted then
  -- Written after the script's first write (HSET above): a Redis at maxmemory refuses a script
  -- only at its first write, so that one must be a command that adds (a deletion first would let
  -- the rest of the script grow memory past it).
  local fields = {}
  if rated then fields = {'n', tostring(n), 'b', tostring(b), 'at', now} end
  if accounted then
    if sweep then
      if #sweep.sized > 0 then redis.call('HDEL', KEYS[7], unpack(sweep.sized)) end
      if sweep.forgotten > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[8], '-inf', '(' .. (now - markMs)) end
      if sweep.lapsed > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[9], '-inf', '(' .. now) end
      fields[#fields + 1] = 'cut'
      fields[#fields + 1] = sweep.cut
      fields[#fields + 1] = 'sw'
      fields[#fields + 1] = now
    end
    if count > 0 then
      if not known then streams = streams + 1 end
      total = total + size - (known or 0)
      redis.call('HSET', KEYS[7], ARGV[11], size)
    end
    fields[#fields + 1] = ''
    fields[#fields + 1] = total
    fields[#fields + 1] = '#'
    fields[#fields + 1] = streams
    -- ZADD answers 1 for a channel it did not hold: one more remembered.
    fields[#fields + 1] = 'm'
    fields[#fields + 1] = remembered + redis.call('ZADD', KEYS[8], now, ARGV[11])
    -- An idempotency key is remembered for its window: it counts until then.
    if idemMs > 0 then
      fields[#fields + 1] = 'k'
      fields[#fields + 1] = idems + redis.call('ZADD', KEYS[9], now + idemMs, KEYS[5])
    end
  end
  -- It lives as long as the marks, or as its fuller bucket takes to fill again if longer.
  local life = math.max(markMs, tonumber(ARGV[22]))
  local renew = now - (tonumber(z[8]) or 0) >= life / 2
  if renew then
    fields[#fields + 1] = 'ex'
    fields[#fields + 1] = now
  end
  redis.call('HSET', KEYS[6], unpack(fields))
  if renew then
    redis.call('PEXPIRE', KEYS[6], life)
    if accounted then
      redis.call('PEXPIRE', KEYS[7], markMs)
      redis.call('PEXPIRE', KEYS[8], markMs)
      redis.call('PEXPIRE', KEYS[9], math.max(markMs, idemMs))
    end
  end
end
if dropped then
  redis.call('HSET', KEYS[4], 'last', order, 'dropped', dropped)
else
  redis.call('HSET', KEYS[4], 'last', order)
end
redis.call('PEXPIRE', KEYS[4], markMs)
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
 * KEYS: the publish state, sizes, published, idempotency keys. ARGV: ageMs, markTtlMs, bytes per channel with entries, per remembered
 * channel. Answers {channels, bytes}.
 */
const HISTORY_USAGE = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local z = redis.call('HMGET', KEYS[1], '', '#', 'cut')
local total, streams = tonumber(z[1]) or 0, tonumber(z[2]) or 0
local gone = redis.call('ZRANGEBYSCORE', KEYS[3], '(' .. (tonumber(z[3]) or 0), now - tonumber(ARGV[1]))
for i = 1, #gone do
  local size = tonumber(redis.call('HGET', KEYS[2], gone[i]))
  if size then
    total = total - size
    streams = streams - 1
  end
end
local remembered = redis.call('ZCOUNT', KEYS[3], now - tonumber(ARGV[2]), '+inf')
local idems = redis.call('ZCOUNT', KEYS[4], now, '+inf')
return {streams, total + streams * tonumber(ARGV[3]) + remembered * tonumber(ARGV[4]) + idems * tonumber(ARGV[5])}
`;

export type PublishReply = [0, string] | [1, string] | [2, number] | [3, "channels" | "bytes", number] | [4];
export type ReadReply = [string, string, string, string | null, string | null, string, [string, string[]][]];

export interface HistoryScripts {
  platePublish(...keysAndArgs: (string | number)[]): Promise<PublishReply>;
  plateReadHistory(...keysAndArgs: string[]): Promise<ReadReply>;
  plateHistoryUsage(state: string, sizes: string, published: string, idempotencyKeys: string, ageMs: number, markTtlMs: number, streamBytes: number, rememberedBytes: number, idempotencyBytes: number): Promise<[number, number]>;
}

/** `redis` with the history scripts defined (sent as EVALSHA, loaded on first use). */
export function withHistoryScripts<C extends Commands>(redis: C): C & HistoryScripts {
  redis.defineCommand("platePublish", { numberOfKeys: 10, lua: PUBLISH });
  redis.defineCommand("plateReadHistory", { numberOfKeys: 4, lua: READ });
  redis.defineCommand("plateHistoryUsage", { numberOfKeys: 4, lua: HISTORY_USAGE });
  return redis as C & HistoryScripts;
}
