import type { Commands } from "@plate/redis";

/*
 * The Lua scripts of `RedisStore` (key layout: the top of redis-store.ts). Redis runs a script with
 * nothing in between, so each is one atomic step. Every key a script touches is one of its KEYS and
 * in one plate's hash slot, so each runs on Redis Cluster too; what spans plates (the plate list,
 * the secrets taken) is written outside scripts, in an order whose failures are harmless (see the
 * store). `MIGRATE_PLATES` alone builds names in Lua: it runs only on one Redis.
 */

/**
 * Stores a token and its uses counter, deleted by Redis at an absolute time (so nothing lives
 * forever). One script, so there is never a token without its expiry. Within the plate's token
 * budget: the plate's tokens (a zset of "token:size" by when each is deleted, and their sum) stop
 * counting when deleted; past the budget nothing is stored and the answer is 0 (else 1).
 * KEYS: token, the plate's token sizes, their sum. ARGV: TokenRecord JSON, epoch ms to delete it
 * at, the budget in bytes (0 = none), bytes counted besides the JSON, the token.
 */
const PUT_TOKEN = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local gone = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. now, 'LIMIT', 0, 1000)
local freed = 0
for i = 1, #gone do freed = freed + tonumber(string.match(gone[i], ':(%d+)$')) end
local total = (tonumber(redis.call('GET', KEYS[3])) or 0) - freed
local size = #ARGV[1] + tonumber(ARGV[4])
local maxBytes = tonumber(ARGV[3])
if maxBytes > 0 and total + size > maxBytes then return 0 end
redis.call('HSET', KEYS[1], 'record', ARGV[1], 'uses', 0)
redis.call('PEXPIREAT', KEYS[1], ARGV[2])
-- Deletions after the first write that adds: a Redis at maxmemory refuses the script there.
if #gone > 0 then redis.call('ZREM', KEYS[2], unpack(gone)) end
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[5] .. ':' .. size)
redis.call('SET', KEYS[3], total + size, 'KEEPTTL')
local at = tonumber(ARGV[2])
if redis.call('PTTL', KEYS[2]) < at - now then
  redis.call('PEXPIREAT', KEYS[2], at)
  redis.call('PEXPIREAT', KEYS[3], at)
end
return 1
`;

/**
 * Adds a key to a plate that exists, refusing a key id already taken; the plate cannot be
 * deleted between the check and the write. Answers 'ok', 'not_found' or 'conflict'.
 * KEYS: plate record, plate's key index, key record. ARGV: key id, key hash, KeyRecord JSON.
 */
const CREATE_KEY = `
if redis.call('EXISTS', KEYS[1]) == 0 then return 'not_found' end
if redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2]) == 0 then return 'conflict' end
redis.call('SET', KEYS[3], ARGV[3])
return 'ok'
`;

/**
 * Adds a signing key to a plate that exists, refusing an id already taken in it. Answers 'ok',
 * 'not_found' or 'conflict'. KEYS: plate record, plate's signing keys. ARGV: key id, record JSON.
 */
const CREATE_SIGNING_KEY = `
if redis.call('EXISTS', KEYS[1]) == 0 then return 'not_found' end
if redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2]) == 0 then return 'conflict' end
return 'ok'
`;

/**
 * A key record, if its plate's index still holds it (a record outlives its index only after a
 * delete that raced a creation; it must not authenticate). Answers the JSON or false.
 * KEYS: key record, plate's key index.
 */
const FIND_KEY = `
local record = redis.call('GET', KEYS[1])
if not record then return false end
local key = cjson.decode(record)
if redis.call('HGET', KEYS[2], key.id) ~= key.hash then return false end
return record
`;

/**
 * Deletes a plate's record, its key index and the key records the caller read from it, then
 * announces it. Answers 1, or 0 when there was no plate (nothing deleted or announced). Publishing
 * inside the script means a deletion is never left unannounced by a node that dies after it; once
 * it ran, no key of the plate authenticates and no token of it claims.
 * KEYS: plate record, plate's key index, key records... ARGV: control channel, payload.
 */
const DELETE_PLATE = `
if redis.call('DEL', KEYS[1]) == 0 then return 0 end
for i = 2, #KEYS do redis.call('DEL', KEYS[i]) end
redis.call('PUBLISH', ARGV[1], ARGV[2])
return 1
`;

/**
 * Revokes one key of one plate if its index still maps the key id to the hash the caller read
 * (a key id of another plate is not in this plate's index, so it is not found), then announces
 * it. Answers 1, or 0 when there was no such key.
 * KEYS: plate's key index, key record. ARGV: key id, key hash, control channel, payload.
 */
const DELETE_KEY = `
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2])
redis.call('PUBLISH', ARGV[3], ARGV[4])
return 1
`;

/**
 * Sets a name of a plate only while the plate exists. Answers 1, or 0 (no plate).
 * KEYS: the plate's record, the name. ARGV: the value.
 */
const SET_IF_PLATE = `
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('SET', KEYS[2], ARGV[1])
return 1
`;

/**
 * Takes ARGV[3] tokens from a token bucket (hash n, at) that refills ARGV[1] a second up to
 * ARGV[2]; answers 0, or the ms to wait (taking nothing). KEYS: the bucket. ARGV[4]: its TTL in ms.
 */
const TAKE_RATE = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local perS, burst, count = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local r = redis.call('HMGET', KEYS[1], 'n', 'at')
local n = burst
if r[1] then n = math.min(burst, tonumber(r[1]) + math.max(0, now - tonumber(r[2])) * perS / 1000) end
if n < count then return math.ceil((count - n) * 1000 / perS) end
redis.call('HSET', KEYS[1], 'n', tostring(n - count), 'at', now)
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[4]))
return 0
`;

/**
 * Reports one node's open connections of a plate and answers the other nodes' (leases in force).
 * KEYS: the plate's hash (node id → "count:lease end ms"). ARGV: node id, count (0: remove), lease ms.
 */
const REPORT_CONNECTIONS = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local count, leaseMs = tonumber(ARGV[2]), tonumber(ARGV[3])
if count > 0 then
  redis.call('HSET', KEYS[1], ARGV[1], count .. ':' .. (now + leaseMs))
  redis.call('PEXPIRE', KEYS[1], leaseMs)
else
  redis.call('HDEL', KEYS[1], ARGV[1])
end
local all = redis.call('HGETALL', KEYS[1])
local others = 0
for i = 1, #all, 2 do
  local n, untilMs = string.match(all[i + 1], '^(%d+):(%d+)$')
  if not n or tonumber(untilMs) < now then
    redis.call('HDEL', KEYS[1], all[i])
  elseif all[i] ~= ARGV[1] then
    others = others + tonumber(n)
  end
end
return others
`;

/**
 * Holds a plate's first webhook events for the caller, unless another holds them or a retry is not
 * due. KEYS: the events (stream), their state (hash: until, retryAt, attempts). ARGV: count, leaseMs.
 * Answers 0 (held, or a retry not due: there are events), nil (none), or {attempts, id, json, id,
 * json, ...}.
 */
const WEBHOOK_CLAIM = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local st = redis.call('HMGET', KEYS[2], 'until', 'retryAt', 'attempts')
if st[1] and tonumber(st[1]) > now then return 0 end
if st[2] and tonumber(st[2]) > now then return 0 end
local entries = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', tonumber(ARGV[1]))
if #entries == 0 then return false end
redis.call('HSET', KEYS[2], 'until', now + tonumber(ARGV[2]))
local out = {tonumber(st[3] or '0')}
for _, e in ipairs(entries) do
  table.insert(out, e[1])
  table.insert(out, e[2][2])
end
return out
`;

/** Removes delivered events and frees the queue. KEYS: events, state. ARGV: ids. Answers how many are left. */
const WEBHOOK_DONE = `
if #ARGV > 0 then redis.call('XDEL', KEYS[1], unpack(ARGV)) end
redis.call('DEL', KEYS[2])
return redis.call('XLEN', KEYS[1])
`;

/** Frees the queue for a retry after ARGV[1] ms, one more attempt counted. KEYS: events, state. */
const WEBHOOK_RETRY = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HDEL', KEYS[2], 'until')
redis.call('HSET', KEYS[2], 'retryAt', now + tonumber(ARGV[1]))
redis.call('HINCRBY', KEYS[2], 'attempts', 1)
return 1
`;

/**
 * Deletes a signing key and announces it, as `DELETE_KEY` does an API key's.
 * KEYS: the plate's signing keys. ARGV: its id, the control channel, the revocation.
 */
const DELETE_SIGNING_KEY = `
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('PUBLISH', ARGV[2], ARGV[3])
return 1
`;

/**
 * Spends one use of a client token, the checks in the order of `MemoryStore.claimToken`. Refusals
 * spend nothing. Its key must still be in the claimed plate's index: a revoked key or a deleted
 * plate (whose index is gone) makes the token unknown. `nowMs` comes from the caller, the same
 * clock that set `expiresAt`. Answers {'ok', uses after this one, TokenRecord JSON} or {code}.
 * KEYS: token, claimed plate's key index. ARGV: claimed plate id, nowMs, tokenTombstoneMs.
 */
const CLAIM_TOKEN = `
local stored = redis.call('HMGET', KEYS[1], 'record', 'uses')
if not stored[1] then return {'invalid_client_socket'} end
local token = cjson.decode(stored[1])
if token.plateId ~= ARGV[1] then return {'invalid_client_socket'} end
if redis.call('HEXISTS', KEYS[2], token.keyId) == 0 then return {'invalid_client_socket'} end
local now = tonumber(ARGV[2])
if now >= token.expiresAt + tonumber(ARGV[3]) then return {'invalid_client_socket'} end
if now >= token.expiresAt then return {'expired_client_socket'} end
if token.maxUses > 0 and tonumber(stored[2]) >= token.maxUses then
  return {'exhausted_client_socket'}
end
return {'ok', redis.call('HINCRBY', KEYS[1], 'uses', 1), stored[1]}
`;

/**
 * Replaces a plate's record if the plate exists. Answers 1 (written) or 0 (no such plate).
 * KEYS: plate record. ARGV: PlateRecord JSON.
 */
const REPLACE_PLATE = `
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('SET', KEYS[1], ARGV[1])
return 1
`;

/**
 * Deletes a name only if it still holds what the caller saw (a compensation must not delete what
 * someone else wrote since). Answers 1 or 0. KEYS: the name. ARGV: the value expected.
 */
const DELETE_IF = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`;

/**
 * Moves the plates of the layout before Redis Cluster support (a hash `plates`: id → record; key
 * indexes named without a hash tag; key records `key:<hash>`) to today's, on one Redis only.
 * Idempotent; answers how many plates it moved. KEYS: the old plate hash, the plate list.
 * ARGV: key prefix.
 */
const MIGRATE_PLATES = `
if redis.call('TYPE', KEYS[1]).ok ~= 'hash' then return 0 end
local p = ARGV[1]
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local id, record = all[i], all[i + 1]
  local tag = '{' .. id .. '}'
  redis.call('SET', p .. 'plate:' .. tag, record, 'NX')
  redis.call('SADD', KEYS[2], id)
  local old = p .. 'plate-keys:' .. id
  for _, hash in ipairs(redis.call('HVALS', old)) do
    local key = redis.call('GET', p .. 'key:' .. hash)
    if key then
      redis.call('SET', p .. 'key:' .. tag .. ':' .. hash, key)
      redis.call('SET', p .. 'secret:' .. hash, id)
      redis.call('DEL', p .. 'key:' .. hash)
    end
  end
  if redis.call('EXISTS', old) == 1 then redis.call('RENAME', old, p .. 'plate-keys:' .. tag) end
end
redis.call('DEL', KEYS[1])
return #all / 2
`;

/** The scripts as commands of a connection; arguments are KEYS then ARGV, as documented above. */
export interface StoreScripts {
  platePutToken(token: string, sizes: string, total: string, record: string, deleteAtMs: number, maxBytes: number, overhead: number, name: string): Promise<number>;
  plateTakeRate(bucket: string, perS: number, burst: number, count: number, ttlMs: number): Promise<number>;
  plateReportConnections(key: string, nodeId: string, count: number, leaseMs: number): Promise<number>;
  plateReplacePlate(plate: string, record: string): Promise<number>;
  plateCreateKey(plate: string, plateKeys: string, keyRecord: string, keyId: string, hash: string, record: string): Promise<unknown>;
  plateFindKey(keyRecord: string, plateKeys: string): Promise<string | null>;
  plateCreateSigningKey(plate: string, signingKeys: string, id: string, record: string): Promise<unknown>;
  /** `numberOfKeys`, then KEYS and ARGV (its number of keys depends on the plate's keys). */
  plateDeletePlate(numberOfKeys: number, ...keysAndArgs: string[]): Promise<number>;
  plateDeleteKey(plateKeys: string, keyRecord: string, keyId: string, hash: string, control: string, payload: string): Promise<number>;
  plateSetIfPlate(plate: string, name: string, value: string): Promise<number>;
  plateWebhookClaim(events: string, state: string, count: number, leaseMs: number): Promise<(string | number)[] | 0 | null>;
  plateWebhookDone(events: string, state: string, ...ids: string[]): Promise<number>;
  plateWebhookRetry(events: string, state: string, retryMs: number): Promise<number>;
  plateDeleteSigningKey(signingKeys: string, id: string, control: string, payload: string): Promise<number>;
  plateClaimToken(token: string, plateKeys: string, plateId: string, nowMs: number, tombstoneMs: number): Promise<unknown>;
  plateDeleteIf(name: string, expected: string): Promise<number>;
  plateMigratePlates(oldPlates: string, plateList: string, prefix: string): Promise<number>;
}

/**
 * Defines the scripts on a connection. ioredis sends each as EVALSHA and falls back to EVAL when
 * Redis answers NOSCRIPT (a restarted Redis has an empty script cache); a cluster client sends
 * each to the master of its first key's slot.
 */
export function withScripts<C extends Commands>(redis: C): C & StoreScripts {
  redis.defineCommand("platePutToken", { numberOfKeys: 3, lua: PUT_TOKEN });
  redis.defineCommand("plateReplacePlate", { numberOfKeys: 1, lua: REPLACE_PLATE });
  redis.defineCommand("plateCreateKey", { numberOfKeys: 3, lua: CREATE_KEY });
  redis.defineCommand("plateFindKey", { numberOfKeys: 2, lua: FIND_KEY });
  redis.defineCommand("plateCreateSigningKey", { numberOfKeys: 2, lua: CREATE_SIGNING_KEY });
  // Its number of keys is given at each call (the plate's key records).
  redis.defineCommand("plateDeletePlate", { lua: DELETE_PLATE });
  redis.defineCommand("plateDeleteKey", { numberOfKeys: 2, lua: DELETE_KEY });
  redis.defineCommand("plateSetIfPlate", { numberOfKeys: 2, lua: SET_IF_PLATE });
  redis.defineCommand("plateWebhookClaim", { numberOfKeys: 2, lua: WEBHOOK_CLAIM });
  redis.defineCommand("plateTakeRate", { numberOfKeys: 1, lua: TAKE_RATE });
  redis.defineCommand("plateReportConnections", { numberOfKeys: 1, lua: REPORT_CONNECTIONS });
  redis.defineCommand("plateWebhookDone", { numberOfKeys: 2, lua: WEBHOOK_DONE });
  redis.defineCommand("plateWebhookRetry", { numberOfKeys: 2, lua: WEBHOOK_RETRY });
  redis.defineCommand("plateDeleteSigningKey", { numberOfKeys: 1, lua: DELETE_SIGNING_KEY });
  redis.defineCommand("plateClaimToken", { numberOfKeys: 2, lua: CLAIM_TOKEN });
  redis.defineCommand("plateDeleteIf", { numberOfKeys: 1, lua: DELETE_IF });
  redis.defineCommand("plateMigratePlates", { numberOfKeys: 2, lua: MIGRATE_PLATES });
  return redis as C & StoreScripts;
}
