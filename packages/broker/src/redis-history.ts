import { Buffer } from "node:buffer";
import { createHash } from "node:crypto";
import { Command, Redis } from "ioredis";
import type { Commands } from "@plate/redis";
import { HISTORY_RUN_MAX_BYTES } from "./broker.js";

/*
 * The history of the Redis broker: Lua scripts, each one atomic step.
 *
 * Keys (prefix `p`, plate `a` as the hash tag `{a}`, channel `c`; see redis-names.ts):
 *   p + "epoch:{a}"                string  the plate's history epoch (created by the first script to need it)
 *   p + "history-head:{a}"         hash    ms, seq: the plate's latest position
 *   p + "history:{a}:" + c         stream  retained messages, an entry a message (entry id = its
 *                                          position's "ms-seq", field m = its Redis payload) or a
 *                                          run of them published by one script (entry id = the
 *                                          last one's, field m = their payloads as on pub/sub:
 *                                          the batch mark, then each payload, U+001E between);
 *                                          a run over HISTORY_RUN_MAX_BYTES is an entry a
 *                                          message; the oldest entry may hold messages already
 *                                          dropped (see 'kept'); PEXPIRE ageMs
 *   p + "history-marks:{a}:" + c   hash    last, dropped ("ms-seq"); kept ("last count skip": the
 *                                          stream's messages and how many of its oldest entry's
 *                                          are dropped, valid while last is the channel's last:
 *                                          else an entry is one message, XLEN counts them);
 *                                          PEXPIRE markTtlMs
 *   p + "idem:{a}:" + owner + ":" + key  string  "id SEP timestamp SEP channel" of a publish;
 *                                          PX window (owner: the API key id, URI-encoded)
 * Every key of a script is in its plate's hash slot, so each script runs on Redis Cluster too.
 * A Redis that evicts keys (any maxmemory-policy but noeviction) breaks these guarantees.
 */

/**
 * Publishes a batch of one plate's messages, in order, each appended to its channel's history, or
 * answers the first publish of a repeated idempotency key. Each message is weighed as if published
 * alone (its rate, its history budget, its batch's refusal) and answered in turn: '0 record'
 * (repeated), '1 id', '2 ms-to-wait' (over a rate), '3 what limit' (over the plate's history
 * budget: what = 'channels' or 'bytes') or '4' (an earlier message of its request's batch was
 * refused); a refusal changes nothing but its batch's mark. Answers the answers as one string, a
 * line each (`parseReplies`): one bulk string to read instead of an array of arrays, which the
 * node's client built a Buffer, a string and an array at a time.
 *
 * One script for many messages is group commit (redis-broker.ts gathers what one turn of the
 * event loop publishes): what a publish reads and writes of its plate (time, epoch, head, publish
 * state) is read and written once per script, and what it reads and writes of its channel once
 * per run of consecutive messages to one channel (one read of its marks and one XRANGE before,
 * one XADD that trims, one marks and size update after), and so is its pub/sub (one PUBLISH per
 * run and name, see the batch mark below). A run goes into the history as one entry, as it goes
 * out on pub/sub: 24 XADDs fewer for W3's runs of 25 cut Redis' instructions a publish by 14%
 * (docs/performance.md). Every redis.call costs
 * about 10,000 instructions of Redis' Lua glue whatever the command, so the count of calls per
 * message is the cost (see docs/performance.md).
 *
 * KEYS: epoch, head, then the plate's publish state (a small hash of its rate buckets 'n', 'b',
 *   'at' (tokens left as of `at`) and its history budget's counts: '' → the bytes of its channels'
 *   retained entries, '#' → how many channels have entries, 'm' → how many channels 'published'
 *   holds (their marks are kept), 'k' → how many idempotency keys are remembered, 'cut' → streams
 *   whose last publish is at or before it were swept, 'sw' → when the last sweep ran, 'ex' → when
 *   its life was last renewed); sizes, a hash: channel → bytes of its retained entries (apart
 *   from the state, which stays small: a small hash is a list that each field read scans);
 *   published, a zset: channel → its last publish (ms): its stream lives `ageMs` after, its marks
 *   `markTtlMs`; idempotency keys, a zset: the key of each publish's idempotency record → when it
 *   lapses; then the keys its messages name (see their letters below): a run's stream and marks,
 *   a message's idempotency record, its batch's mark (a string set when one of the batch's
 *   messages is refused; see broker.ts `PublishRequest.batch`).
 * ARGV: new epoch, separator, publish command (PUBLISH, or SPUBLISH on a cluster), the plate-wide
 *   channel (which gets the channel name, then the payload), the bytes counted per entry, per
 *   channel with entries, per remembered channel and per idempotency record, how often expired
 *   channels are swept (ms), how long a batch's mark lives (ms), the number of messages; then the
 *   plate's settings, the same for every message of the script: what goes before a channel's name
 *   to make its pub/sub channel, the retention (count, ageMs, markTtlMs), the publish rates
 *   (broker.ts `PublishRate`: messages a second, burst, bytes a second, burst; both 0: not rated)
 *   and how long a full bucket takes to fill (ms: the state lives at least that long), the history
 *   budget (broker.ts `HistoryBudget`: '1' to keep its counts (a plate with a budget) or '0',
 *   channels, bytes; 0 = no limit), the batch mark (what starts the pub/sub payload of a run of
 *   more than one message to a channel: their payloads, separated by U+001E; '' publishes each
 *   message on its own), the plain payload mark; then per message its letters, the arguments its
 *   letters take, and its body. A message says only what differs from a plain message of the
 *   message before it, a letter each, in this order, each taking its arguments (and keys) in turn:
 *     c  a new channel, and a run of its messages: the channel (keys: its stream, its marks)
 *     t  a new timestamp (kept by the messages after it)
 *     m  a payload mark and what follows the timestamp (the event name and a separator after it);
 *        without it, the plain mark and ''
 *     v  what goes before the payload on pub/sub only (the volatile mark and metadata)
 *     r  what it takes of the rates: one message, and the bytes given; R: the messages and bytes
 *        given (neither: nothing)
 *     i  an idempotency window, ms (key: its record)
 *     b  part of a request's batch (key: the batch's mark)
 *   The first message says c and t. Written this way, a plain message is two arguments instead of
 *   fourteen: each argument costs Redis about 1,000 instructions to read into the script, and the
 *   node a bulk string to write (see docs/performance.md).
 *
 * The sweep of expired channels (streams whose size stops counting, marks that stop being
 * remembered) runs at most every sweep period, or at once before the budget would refuse; the
 * state's life is renewed when half of it has passed.
 */
const PUBLISH = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local SEP, PUB, plateWide = ARGV[2], ARGV[3], ARGV[4]
local entryBytes, streamBytes, markBytes, idemBytes = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local sweepMs, batchMs = tonumber(ARGV[9]), ARGV[10]
local messages = tonumber(ARGV[11])
-- The plate's settings, the same for every message of the script.
local channelPrefix = ARGV[12]
local count, ageMs, markMs = tonumber(ARGV[13]), tonumber(ARGV[14]), tonumber(ARGV[15])
-- The same as given, for commands: a number argument of redis.call is formatted as a float (%.14g).
local ageArg, markArg = ARGV[14], ARGV[15]
local perS, burst, bPerS, bBurst, refillMs = tonumber(ARGV[16]), tonumber(ARGV[17]), tonumber(ARGV[18]), tonumber(ARGV[19]), tonumber(ARGV[20])
local rated = perS > 0 or bPerS > 0
local accounted = ARGV[21] == '1'
local budgetChannels, budgetBytes = tonumber(ARGV[22]), tonumber(ARGV[23])
-- What starts a run's messages published together ('' = each message published on its own).
local batchMark = ARGV[24]
-- Whether a run of messages to one channel goes into its history as one entry, as on pub/sub:
-- the batch mark (U+001F P B U+001F) then their payloads, separated by U+001E, its id the last
-- one's. Read whether or not (a node that writes runs may have written them).
local runs = batchMark ~= ''
-- The order ("ms-seq") of the message whose payload starts at \`at\` in a run entry's \`pl\`:
-- after its mark (4 bytes), its epoch and '_'.
local function orderIn(pl, at)
  local u = string.find(pl, '_', at + 4, true)
  local e = u and string.find(pl, SEP, u + 1, true)
  if not e then return '0-0' end
  return string.sub(pl, u + 1, e - 1)
end
-- The messages, as their letters say (see ARGV): each one's fields in one array, 14 slots a
-- message, message i's at M[(i - 1) * 14 + 1] on: 1 whether it starts a run, 2 its channel,
-- 3 stream, 4 marks, 5 timestamp, 6 body, 7 payload mark, 8 middle, 9 pre, 10 messages and 11
-- bytes it takes of the rates, 12 idempotency window, 13 idempotency key, 14 batch key. (A table
-- per message, its fields hashed, cost ~0.4 µs a message more; the offsets are numbers, not
-- named locals: each local a closure captures costs every script its capture.)
local M = {}
do
  local plainMark = ARGV[25]
  local a, k = 26, 7
  local channel, stream, marks, ts
  for i = 1, messages do
    local d = ARGV[a]
    a = a + 1
    local newRun = false
    local mark, middle, pre, takeN, takeB, idemMs, idemKey, batchKey = plainMark, '', '', 0, 0, 0, false, false
    for j = 1, #d do
      local f = string.byte(d, j)
      if f == 99 then -- c
        channel, stream, marks, newRun = ARGV[a], KEYS[k], KEYS[k + 1], true
        a, k = a + 1, k + 2
      elseif f == 116 then -- t
        ts = ARGV[a]
        a = a + 1
      elseif f == 109 then -- m
        mark, middle = ARGV[a], ARGV[a + 1]
        a = a + 2
      elseif f == 118 then -- v
        pre = ARGV[a]
        a = a + 1
      elseif f == 114 then -- r
        takeN, takeB = 1, tonumber(ARGV[a])
        a = a + 1
      elseif f == 82 then -- R
        takeN, takeB = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
        a = a + 2
      elseif f == 105 then -- i
        idemMs, idemKey = tonumber(ARGV[a]), KEYS[k]
        a, k = a + 1, k + 1
      elseif f == 98 then -- b
        batchKey = KEYS[k]
        k = k + 1
      else
        return redis.error_reply('ERR publish script: unknown letter ' .. string.char(f))
      end
    end
    local at = (i - 1) * 14
    M[at + 1], M[at + 2], M[at + 3], M[at + 4], M[at + 5], M[at + 6], M[at + 7] = newRun, channel, stream, marks, ts, ARGV[a], mark
    M[at + 8], M[at + 9], M[at + 10], M[at + 11], M[at + 12], M[at + 13], M[at + 14] = middle, pre, takeN, takeB, idemMs, idemKey, batchKey
    a = a + 1
  end
end
-- The publish state lives as long as the marks, or as its fuller bucket takes to fill again if
-- longer; the idempotency keys' zset as long as the marks or its longest window.
local life = math.max(markMs, refillMs)
local idemLife = markMs
local epoch = redis.call('GET', KEYS[1])
local newEpoch = not epoch
if newEpoch then epoch = ARGV[1] end
local head = redis.call('HMGET', KEYS[2], 'ms', 'seq')
local headMs, headSeq = tonumber(head[1]), tonumber(head[2])
-- Whether a message was published (the head, and the state when rated or accounted, are written).
local advanced = false
-- The publish state, read by the first message that needs it: the rate buckets (nil: full) and
-- the budget's counts. Written back once, at the end.
local state = false
local function readState()
  local z = redis.call('HMGET', KEYS[3], 'n', 'b', 'at', '', '#', 'cut', 'sw', 'ex', 'm', 'k')
  state = {
    n = tonumber(z[1]), b = tonumber(z[2]), at = tonumber(z[3]),
    total = tonumber(z[4]) or 0, streams = tonumber(z[5]) or 0, cut = tonumber(z[6]) or 0,
    sw = tonumber(z[7]) or 0, ex = tonumber(z[8]) or 0, remembered = tonumber(z[9]) or 0,
    idems = tonumber(z[10]) or 0, swept = false,
  }
end
-- A sweep weighed into an accepted message, whose deletions are written after the next adding write.
local sweepDue = false
local function writeSweep()
  local s = sweepDue
  if not s then return end
  sweepDue = false
  if #s.sized > 0 then redis.call('HDEL', KEYS[4], unpack(s.sized)) end
  if s.forgotten > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', '(' .. (now - markMs)) end
  if s.lapsed > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[6], '-inf', '(' .. now) end
end
-- A refusal of the message whose fields start at M[at + 1]; its request's batch is marked refused
-- (see PublishRequest.batch).
local function refuse(at, answer)
  local batchKey = M[at + 14]
  if batchKey then redis.call('SET', batchKey, '1', 'PX', batchMs) end
  return answer
end
-- The sweep's effect if it ran now (see the budget in the runs below): written only with a message it let in.
local function plan(channel)
  local upTo = now - ageMs
  local gone = redis.call('ZRANGEBYSCORE', KEYS[5], '(' .. state.cut, upTo, 'WITHSCORES', 'LIMIT', 0, 1000)
  local names = {}
  for g = 1, #gone, 2 do names[#names + 1] = gone[g] end
  local p = {cut = upTo, freed = 0, streams = 0, here = false, sized = {}}
  -- Cut short at 1,000: the next sweep goes on from the last one read (read again, counted once).
  if #names == 1000 then p.cut = tonumber(gone[#gone]) - 1 end
  if #names > 0 then
    local sizes = redis.call('HMGET', KEYS[4], unpack(names))
    for g = 1, #names do
      local sz = tonumber(sizes[g])
      if sz then
        p.freed = p.freed + sz
        p.streams = p.streams + 1
        p.sized[#p.sized + 1] = names[g]
        if names[g] == channel then p.here = true end
      end
    end
  end
  p.forgotten = redis.call('ZCOUNT', KEYS[5], '-inf', '(' .. (now - markMs))
  p.lapsed = redis.call('ZCOUNT', KEYS[6], '-inf', '(' .. now)
  return p
end
-- A run's text: the batch mark, then payloads[from..to] separated by U+001E. The mark is joined to
-- the first payload, not to the whole run (a copy of it the fewer); \`payloads\` is left as it was.
local function runOf(payloads, from, to)
  local first = payloads[from]
  payloads[from] = batchMark .. first
  local text = table.concat(payloads, '\\30', from, to)
  payloads[from] = first
  return text
end
-- Idempotency records published by this script (written at the end of their message's run).
local recorded = {}
local replies = {}

-- The runs: messages first..last to one channel. Each message is weighed in turn, as if published
-- alone; what the accepted ones write is written once for the run (one trim, one marks and size
-- update), apart from each one's XADD, PUBLISH and idempotency record.
local first = 1
while first <= messages do
  local last = first
  while last < messages and not M[last * 14 + 1] do last = last + 1 end
  -- The run, here and not in a function of its own: that closure, made every script, captured
  -- some forty of the locals above, each a search of the open upvalues.
  repeat
    local f = (first - 1) * 14
    local stream, marks, channel = M[f + 3], M[f + 4], M[f + 2]
    local cutMs = now - ageMs
    -- The channel's retained messages, by position (1 = oldest; the run's own come after \`len\`),
    -- and of the oldest ones, those this run may drop: bytes[p] and ids[p]. An id is known for an
    -- entry of one message and for a run's last (its entry id); a run's other messages say their
    -- entry (entId, entPl), place in it (idxOf) and where their payload starts (offs), read when
    -- needed (\`orderIn\`). Those tables are made at the first run entry read.
    -- \`skip\` of the oldest entry's messages were dropped already (its entry stays until the rest go).
    local len, lastDropped, skip = 0, false, 0
    local ids, bytes = {}, {}
    local entId, entPl, idxOf, offs = false, false, false, false
    local aged = 0
    if count > 0 then
      local mk = redis.call('HMGET', marks, 'last', 'kept')
      -- 'kept' ("last count skip") is this script's if the channel's last publish wrote it (its
      -- last is the channel's); else the stream holds entries of one message (a node before runs,
      -- or no stream): XLEN counts them.
      local keptLast, keptN, keptSkip
      if mk[2] then keptLast, keptN, keptSkip = string.match(mk[2], '^(%S+) (%d+) (%d+)$') end
      if keptLast and keptLast == mk[1] then
        len, skip = tonumber(keptN), tonumber(keptSkip)
      elseif mk[1] then
        len = redis.call('XLEN', stream)
      end
      if len > 0 then
        local want = math.min(len, math.max(0, len + (last - first + 1) - count)) + 1
        local after, c, nE, ended = '-', 2, 0, false
        while true do
          local got = redis.call('XRANGE', stream, after, '+', 'COUNT', c)
          for g = 1, #got do
            local eid, pl = got[g][1], got[g][2][2]
            nE = nE + 1
            local b1, b2, b3, b4 = string.byte(pl, 1, 4)
            if b1 == 31 and b2 == 80 and b3 == 66 and b4 == 31 then
              if not entId then entId, entPl, idxOf, offs = {}, {}, {}, {} end
              local from = 1
              if nE == 1 then from = skip + 1 end
              local at, k = 5, 0
              while true do
                local rs = string.find(pl, '\\30', at, true)
                k = k + 1
                if k >= from then
                  local p = #bytes + 1
                  bytes[p], entId[p], entPl[p], idxOf[p], offs[p] = (rs or #pl + 1) - at + entryBytes, eid, pl, k, at
                  if not rs then ids[p] = eid end
                end
                if not rs then break end
                at = rs + 1
              end
            else
              local p = #bytes + 1
              bytes[p], ids[p] = #pl + entryBytes, eid
            end
            after = '(' .. eid
          end
          local n = #bytes
          if #got < c then
            ended = true
            break
          end
          -- Enough: what the run may drop, and a message at or past the age cut after it (every
          -- entry before the cut goes at the run's first publish). Entries are in time order.
          if n >= want and tonumber(string.match(ids[n], '^(%d+)')) >= cutMs then break end
          c = 2
          if n < want then c = math.max(2, math.ceil((want - n) * nE / math.max(n, 1))) end
        end
        -- Read to its end: what it holds (a count of another writer's is corrected).
        if ended or #bytes > len then len = #bytes end
        if len > 0 and tonumber(string.match(ids[1] or orderIn(entPl[1], offs[1]), '^(%d+)')) < cutMs then
          for p = 1, #bytes do
            if tonumber(string.match(ids[p] or orderIn(entPl[p], offs[p]), '^(%d+)')) >= cutMs then break end
            aged = p
          end
        end
      end
      -- XLEN or XRANGE found none: the stream expired (or never was); trimming always keeps the
      -- newest message. Whatever it held up to the channel's last id is gone.
      if len == 0 then
        lastDropped, skip = mk[1], 0
      end
    end
    local channelSize = false
    -- The accepted messages, in order: their positions, payloads and places in M.
    local accepted, accOrder, accPayload, accMsg = 0, {}, {}, {}
    local dropTo = 0
    local pendingMark, pendingIdems = 0, 0
    for i = first, last do
      local at = (i - 1) * 14
      local idemMs, idemKey, batchKey = M[at + 12], M[at + 13], M[at + 14]
      local reply = false
      if batchKey and redis.call('EXISTS', batchKey) == 1 then reply = '4' end
      if not reply and idemMs > 0 then
        local prior = recorded[idemKey] or redis.call('GET', idemKey)
        if prior then reply = '0 ' .. prior end
      end
      if not reply and (rated or accounted) and not state then readState() end
      local n, b
      if not reply and rated then
        local takeN, takeB = M[at + 10], M[at + 11]
        local elapsed = 0
        if state.at then elapsed = math.max(0, now - state.at) end
        n, b = burst, bBurst
        if state.n then n = math.min(burst, state.n + elapsed * perS / 1000) end
        if state.b then b = math.min(bBurst, state.b + elapsed * bPerS / 1000) end
        local wait = 0
        if perS > 0 and n < takeN then wait = math.ceil((takeN - n) * 1000 / perS) end
        if bPerS > 0 and b < takeB then wait = math.max(wait, math.ceil((takeB - b) * 1000 / bPerS)) end
        if wait > 0 then reply = refuse(at, '2 ' .. wait) end
        if perS > 0 then n = n - takeN end
        if bPerS > 0 then b = b - takeB end
      end
      if not reply then
        local ms, seq = now, 0
        if headMs and headMs >= now then
          ms = headMs
          seq = headSeq + 1
        end
        -- %d: integer formatting (\`..\` formats a number as a float, %.14g, several times slower).
        local order = string.format('%d-%d', ms, seq)
        local id = epoch .. '_' .. order
        local ts = M[at + 5]
        local payload = M[at + 7] .. id .. SEP .. ts .. SEP .. M[at + 8] .. M[at + 6]
        -- What publishing it would drop: the oldest entries past \`count\`, and (at the first) those
        -- past the age.
        local to = dropTo
        if count > 0 then to = math.max(dropTo, aged, len + accepted + 1 - count) end
        local freed = 0
        for p = dropTo + 1, to do freed = freed + bytes[p] end
        -- The budget: its counts as they are (with this run's marks and records not yet written),
        -- then, when due (or to spare a refusal), the sweep's effect: channels whose stream expired
        -- since the last cut stop counting, and marks past their life.
        local known, size, total, streams, remembered, idems
        local sweep = false
        if accounted then
          if channelSize == false then channelSize = tonumber(redis.call('HGET', KEYS[4], channel)) end
          if now - state.sw >= sweepMs then sweep = plan(channel) end
          local refusal
          while true do
            known = channelSize
            total, streams = state.total, state.streams
            remembered, idems = state.remembered + pendingMark, state.idems + pendingIdems
            if sweep then
              idems = idems - sweep.lapsed
              if sweep.here then known = nil end
              total = total - sweep.freed
              streams = streams - sweep.streams
              remembered = remembered - sweep.forgotten
            end
            -- A stream that expired since the last sweep stops counting now (the sweep would not
            -- see it once this publish renews the channel's last publish).
            if known and count > 0 and len == 0 and accepted == 0 then
              total = total - known
              streams = streams - 1
              known = nil
            end
            size = known
            if count > 0 then size = math.max(0, (known or 0) - freed) + #payload + entryBytes end
            local newStream = count > 0 and not known
            refusal = false
            if newStream and budgetChannels > 0 and streams >= budgetChannels then refusal = '3 channels ' .. budgetChannels end
            if not refusal and budgetBytes > 0 then
              local before = total + streams * streamBytes + remembered * markBytes + idems * idemBytes
              local after = before + (size or 0) - (known or 0)
              if idemMs > 0 then after = after + idemBytes end
              if newStream then after = after + streamBytes + markBytes end
              if after > budgetBytes and after > before then refusal = '3 bytes ' .. budgetBytes end
            end
            -- Refused before a sweep: sweep first, and weigh again.
            if not refusal or sweep then break end
            sweep = plan(channel)
          end
          if refusal then reply = refuse(at, refusal) end
        end
        if not reply then
          reply = '1 ' .. id
          headMs, headSeq, advanced = ms, seq, true
          accepted = accepted + 1
          accOrder[accepted], accPayload[accepted], accMsg[accepted] = order, payload, at
          if count > 0 then
            ids[len + accepted] = order
            bytes[len + accepted] = #payload + entryBytes
          end
          dropTo = to
          if rated then state.n, state.b, state.at = n, b, now end
          if accounted then
            if sweep then
              sweepDue = sweep
              state.cut, state.sw, state.swept = sweep.cut, now, true
              state.remembered = remembered - pendingMark
              state.idems = idems - pendingIdems
            end
            state.total, state.streams = total, streams
            if count > 0 then
              if not known then
                state.streams = state.streams + 1
                pendingMark = 1
              end
              state.total = state.total + size - (known or 0)
              channelSize = size
            end
            if idemMs > 0 then
              pendingIdems = pendingIdems + 1
              idemLife = math.max(idemLife, idemMs)
            end
          end
          if idemMs > 0 then recorded[idemKey] = id .. SEP .. ts .. SEP .. channel end
        end
      end
      replies[i] = reply
    end
    if accepted == 0 then break end
    -- The run's writes. The first adds: a Redis at maxmemory refuses a script only at its first
    -- write, so a deletion first would let the rest of the script grow memory past it.
    local lastOrder = accOrder[accepted]
    if count == 0 then lastDropped = lastOrder end
    if dropTo > 0 then lastDropped = ids[dropTo] or orderIn(entPl[dropTo], offs[dropTo]) end
    -- What stays: from position dropTo + 1 on. An older entry it is in stays whole (the trim keeps
    -- it and every later one) with its first messages skipped; of the run's own, only those kept
    -- are added (\`keptFrom\` on), as one entry (a run) or one each.
    local keptFrom, minId = 1, false
    if dropTo > len then keptFrom = dropTo - len + 1 end
    -- A run is kept as one entry while its payloads are at most HISTORY_RUN_MAX_BYTES (broker.ts),
    -- else an entry a message: the oldest entry is read again by every publish until it goes.
    local asRun = false
    if runs and count > 0 and keptFrom < accepted then
      local size = 0
      for j = keptFrom, accepted do size = size + #accPayload[j] end
      asRun = size <= ${HISTORY_RUN_MAX_BYTES}
    end
    if count > 0 and dropTo > 0 then
      local q = dropTo + 1
      if q > len then
        skip = 0
        minId = accOrder[keptFrom]
        if asRun then minId = lastOrder end
      elseif idxOf and idxOf[q] then
        minId, skip = entId[q], idxOf[q] - 1
      else
        minId, skip = ids[q], 0
      end
    end
    if count > 0 then
      local kept = string.format('%s %d %d', lastOrder, len + accepted - dropTo, skip)
      if lastDropped then
        redis.call('HSET', marks, 'last', lastOrder, 'dropped', lastDropped, 'kept', kept)
      else
        redis.call('HSET', marks, 'last', lastOrder, 'kept', kept)
      end
    elseif lastDropped then
      redis.call('HSET', marks, 'last', lastOrder, 'dropped', lastDropped)
    else
      redis.call('HSET', marks, 'last', lastOrder)
    end
    writeSweep()
    redis.call('PEXPIRE', marks, markArg)
    -- The run's entry when it holds all of the run (its pub/sub message is the same text).
    local runText = false
    if count > 0 then
      -- One XADD a run (or a message, without runs); the last trims what the run dropped.
      local stored = accPayload[accepted]
      if asRun then
        stored = runOf(accPayload, keptFrom, accepted)
        if keptFrom == 1 then runText = stored end
      else
        for j = keptFrom, accepted - 1 do redis.call('XADD', stream, accOrder[j], 'm', accPayload[j]) end
      end
      if minId then
        redis.call('XADD', stream, 'MINID', minId, lastOrder, 'm', stored)
      else
        redis.call('XADD', stream, lastOrder, 'm', stored)
      end
      redis.call('PEXPIRE', stream, ageArg)
    end
    if accounted then
      if count > 0 and channelSize then redis.call('HSET', KEYS[4], channel, channelSize) end
      -- ZADD answers 1 for a channel it did not hold: one more remembered.
      state.remembered = state.remembered + redis.call('ZADD', KEYS[5], now, channel)
    end
    -- Pub/sub: a run of one message, or every message on its own, as it is; else the run at once,
    -- its payloads after the batch mark, separated by U+001E (which no payload holds). Each PUBLISH
    -- is a redis.call: one per run instead of one per message.
    -- A message with volatile metadata goes out with it before its payload (\`lives\` is a list of
    -- its own only then).
    local lives = accPayload
    for j = 1, accepted do
      local pre = M[accMsg[j] + 9]
      if pre ~= '' then
        if lives == accPayload then
          lives = {}
          for q = 1, j - 1 do lives[q] = accPayload[q] end
        end
        lives[j] = pre .. accPayload[j]
      elseif lives ~= accPayload then
        lives[j] = accPayload[j]
      end
    end
    if batchMark == '' or accepted == 1 then
      for j = 1, accepted do
        local live = lives[j]
        redis.call(PUB, channelPrefix .. channel, live)
        redis.call(PUB, plateWide, channel .. live)
      end
    else
      local all = runText
      if not all or lives ~= accPayload then all = runOf(lives, 1, accepted) end
      redis.call(PUB, channelPrefix .. channel, all)
      redis.call(PUB, plateWide, channel .. all)
    end
    for j = 1, accepted do
      local at = accMsg[j]
      local idemMs, idemKey = M[at + 12], M[at + 13]
      if idemMs > 0 then
        redis.call('SET', idemKey, recorded[idemKey], 'PX', idemMs)
        -- An idempotency key is remembered for its window: it counts until then.
        if accounted then state.idems = state.idems + redis.call('ZADD', KEYS[6], now + idemMs, idemKey) end
      end
    end
  until true
  first = last + 1
end
if advanced then
  redis.call('HSET', KEYS[2], 'ms', string.format('%d', headMs), 'seq', string.format('%d', headSeq))
  if newEpoch then redis.call('SET', KEYS[1], epoch) end
end
if advanced and (rated or accounted) then
  local fields = {}
  if rated then fields = {'n', tostring(state.n), 'b', tostring(state.b), 'at', state.at} end
  if accounted then
    fields[#fields + 1] = ''
    fields[#fields + 1] = state.total
    fields[#fields + 1] = '#'
    fields[#fields + 1] = state.streams
    fields[#fields + 1] = 'm'
    fields[#fields + 1] = state.remembered
    fields[#fields + 1] = 'k'
    fields[#fields + 1] = state.idems
    if state.swept then
      fields[#fields + 1] = 'cut'
      fields[#fields + 1] = state.cut
      fields[#fields + 1] = 'sw'
      fields[#fields + 1] = state.sw
    end
  end
  local renew = now - state.ex >= life / 2
  if renew then
    fields[#fields + 1] = 'ex'
    fields[#fields + 1] = now
  end
  redis.call('HSET', KEYS[3], unpack(fields))
  if renew then
    redis.call('PEXPIRE', KEYS[3], life)
    if accounted then
      redis.call('PEXPIRE', KEYS[4], markMs)
      redis.call('PEXPIRE', KEYS[5], markMs)
      redis.call('PEXPIRE', KEYS[6], idemLife)
    end
  end
end
return table.concat(replies, '\\n')
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
  plateReadHistory(...keysAndArgs: string[]): Promise<ReadReply>;
  plateHistoryUsage(state: string, sizes: string, published: string, idempotencyKeys: string, ageMs: number, markTtlMs: number, streamBytes: number, rememberedBytes: number, idempotencyBytes: number): Promise<[number, number]>;
}

/** `redis` with the history scripts defined (sent as EVALSHA, loaded on first use). */
export function withHistoryScripts<C extends Commands>(redis: C): C & HistoryScripts {
  redis.defineCommand("plateReadHistory", { numberOfKeys: 4, lua: READ });
  redis.defineCommand("plateHistoryUsage", { numberOfKeys: 4, lua: HISTORY_USAGE });
  return redis as C & HistoryScripts;
}

/** The publish script's SHA-1, as EVALSHA names it. */
const PUBLISH_SHA = createHash("sha1").update(PUBLISH).digest("hex");
const PUBLISH_BULK = bulk(PUBLISH);
const PUBLISH_SHA_BULK = bulk(PUBLISH_SHA);

/**
 * Sockets that sent the publish script in full (EVAL): the Redis at the other end has it. Redis
 * keeps scripts per server, and a socket reaches one server for its life.
 */
const publishLoaded = new WeakSet<object>();

/**
 * The publish script's arguments as RESP, written by the caller: `keys` is `keyCount` bulk strings
 * (see `bulk`), `args` is `argCount`. `slotKey` is any one of the keys (each is in the plate's hash
 * slot): a cluster client routes the command by it.
 *
 * Written as RESP by the caller rather than handed over as arrays of strings for ioredis to write:
 * a script of 30 messages had about 450 arguments (each written by ioredis, or by us from an
 * array, a `Buffer.byteLength` call and four concatenations), most of them the same from message
 * to message. Written by the caller, once per script what the script shares, it took the node's
 * instructions per publish on Redis from 160,456 to 148,503 (W3's path,
 * `load-tests/dist/instructions.js --redis`); a message's letters (see PUBLISH) since leave out
 * what it shares with the message before it.
 */
export interface PublishCall {
  /** How many messages the script publishes. */
  readonly messages: number;
  readonly slotKey: string;
  readonly keyCount: number;
  readonly keys: string;
  readonly argCount: number;
  readonly args: string;
}

/** `text` as a RESP bulk string. */
export function bulk(text: string): string {
  return "$" + Buffer.byteLength(text) + "\r\n" + text + "\r\n";
}

const EVAL_BULK = bulk("eval");
const EVALSHA_BULK = bulk("evalsha");

/**
 * The publish script's command: EVALSHA, or EVAL on a socket that has not sent it yet (as
 * ioredis' own script commands do). Its `args` are only what a cluster client routes it by (the
 * SHA, one key); what it writes is `call`'s.
 */
class PublishCommand extends Command {
  #socket: object | undefined;
  readonly #count: number;
  readonly #rest: string;

  constructor(call: PublishCall) {
    super("evalsha", [PUBLISH_SHA, 1, call.slotKey], { replyEncoding: "utf8" });
    this.#count = 3 + call.keyCount + call.argCount;
    this.#rest = bulk(String(call.keyCount)) + call.keys + call.args;
  }

  override toWritable(socket: object): string | Buffer {
    this.#socket = socket;
    if (!publishLoaded.has(socket)) {
      publishLoaded.add(socket);
      this.name = "eval";
    } else if (this.name === "eval") {
      // Sent again on another socket (a cluster's redirection) that has it.
      this.name = "evalsha";
    }
    const head = this.name === "eval" ? EVAL_BULK + PUBLISH_BULK : EVALSHA_BULK + PUBLISH_SHA_BULK;
    return "*" + this.#count + "\r\n" + head + this.#rest;
  }

  /** Its socket's server does not have the script after all (SCRIPT FLUSH): the next one sends it. */
  forgetScript(): void {
    if (this.#socket !== undefined) publishLoaded.delete(this.#socket);
  }
}

/** The publish script's answers (see PUBLISH): a line each, its fields separated by spaces. */
function parseReplies(text: string): PublishReply[] {
  const replies: PublishReply[] = [];
  let from = 0;
  while (from <= text.length) {
    let to = text.indexOf("\n", from);
    if (to < 0) to = text.length;
    replies.push(parseReply(text.slice(from, to)));
    from = to + 1;
  }
  return replies;
}

function parseReply(line: string): PublishReply {
  switch (line.charCodeAt(0)) {
    case 0x30:
      return [0, line.slice(2)];
    case 0x31:
      return [1, line.slice(2)];
    case 0x32:
      return [2, Number(line.slice(2))];
    case 0x33: {
      const space = line.indexOf(" ", 2);
      return [3, line.slice(2, space), Number(line.slice(space + 1))] as PublishReply;
    }
    case 0x34:
      return [4];
  }
  throw new Error(`the publish script answered ${JSON.stringify(line)}`);
}

/**
 * The most messages a publish script has for its subscribers to hear it before its publisher has
 * the answer (`sendPublish`). A script of more is a node busy publishing (group commit gathered
 * them), whose publishers are answered as soon as Redis answers: at W3 (64 publishers, 20-27
 * messages a script) hearing first cost 11% of the publishes a second on Redis (issue 18).
 */
export const DELIVERIES_FIRST_MAX_MESSAGES = 4;

/**
 * Runs the publish script (PUBLISH above) with `call`'s keys and arguments; answers its list of
 * answers.
 *
 * A script of at most `DELIVERIES_FIRST_MAX_MESSAGES` messages is heard by its subscribers, the
 * node's own included, before its publisher has the answer:
 * - On one Redis (not a cluster) the script goes after a PING, in the same write. Redis writes
 *   its clients' pending output newest first (the list of clients with output to write is a
 *   stack), so the script's caller, whose answer comes last, would be written before the
 *   subscribers its PUBLISH reached. The PING's answer makes the caller a client with output
 *   before the script runs: every subscriber is written before it. A cluster client routes a PING
 *   apart from the script (it has no key), so there the script goes alone.
 * - The answers are given after the event loop's poll phase (`setImmediate`): the kernel can
 *   report the node's sockets ready in another order than Redis wrote them (with only the PING,
 *   up to 1 publish in 4 was answered first while the machine's other core was busy), and a
 *   subscriber connection that the same poll reports after the command connection is still read
 *   before the answers are given.
 * Where the node and its Redis share a core (W1 in docs/performance.md), the node woke for the
 * answer, handled it and slept before Redis wrote its subscriber connection: each fan-out began
 * 0.06-0.09 ms later (issue 18). The publisher's answer waits for the node's own fan-out of the
 * message, as on the embedded broker.
 */
export async function sendPublish(redis: Commands, call: PublishCall): Promise<PublishReply[]> {
  const hearFirst = call.messages <= DELIVERIES_FIRST_MAX_MESSAGES;
  const stream = hearFirst && redis instanceof Redis ? redis.stream : undefined;
  const send = () => {
    const command = new PublishCommand(call);
    if (stream === undefined) {
      redis.sendCommand(command);
    } else {
      // One write for both: Redis reads them together.
      const ping = new Command("ping");
      ping.promise.catch(() => undefined);
      stream.cork();
      redis.sendCommand(ping);
      redis.sendCommand(command);
      stream.uncork();
    }
    return { command, reply: (command.promise as Promise<string>).then(parseReplies) };
  };
  const { command, reply } = send();
  let replies;
  try {
    replies = await reply;
  } catch (err) {
    if (!(err instanceof Error) || !err.message.includes("NOSCRIPT")) throw err;
    command.forgetScript();
    replies = await send().reply;
  }
  if (hearFirst) await new Promise<void>((resolve) => setImmediate(resolve));
  return replies;
}
