import type { Commands } from "@plate/redis";

/*
 * The Lua scripts of `RedisStore` (key layout: the top of redis-store.ts). Redis runs a script with
 * nothing in between, so each is one atomic step. Every key a script touches is one of its KEYS and
 * in one plate's hash slot, so each runs on Redis Cluster too; what spans plates (the plate list,
 * the secret-hash pointers) is written outside scripts, in an order whose failures are harmless
 * (see the store). `MIGRATE_PLATES` alone builds names in Lua: it runs only on one Redis.
 */

/**
 * Stores a token and its uses counter, deleted by Redis at an absolute time (so nothing lives
 * forever). One script, so there is never a token without its expiry.
 * KEYS: token. ARGV: TokenRecord JSON, epoch ms to delete it at.
 */
const PUT_TOKEN = `
redis.call('HSET', KEYS[1], 'record', ARGV[1], 'uses', 0)
redis.call('PEXPIREAT', KEYS[1], ARGV[2])
return 1
`;

/**
 * Indexes a key in a plate that exists, refusing a key id already taken; the plate cannot be
 * deleted between the check and the write. Answers 'ok', 'not_found' or 'conflict'.
 * KEYS: plate record, plate's key index. ARGV: key id, key hash.
 */
const INDEX_KEY = `
if redis.call('EXISTS', KEYS[1]) == 0 then return 'not_found' end
if redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2]) == 0 then return 'conflict' end
return 'ok'
`;

/**
 * Deletes a plate's record and its key index, then announces it, and answers the hashes of its
 * keys (whose pointers the caller deletes) or 0 when there was no plate (nothing announced).
 * Publishing inside the script means a deletion is never left unannounced by a node that dies
 * after it; once it ran, no key of the plate authenticates and no token of it claims.
 * KEYS: plate record, plate's key index. ARGV: control channel, payload.
 */
const DELETE_PLATE = `
if redis.call('DEL', KEYS[1]) == 0 then return 0 end
local hashes = redis.call('HVALS', KEYS[2])
redis.call('DEL', KEYS[2])
redis.call('PUBLISH', ARGV[1], ARGV[2])
return hashes
`;

/**
 * Revokes one key of one plate (a key id of another plate is not in this plate's index, so it is
 * not found), then announces it. Answers the key's hash, or 0 when there was no such key.
 * KEYS: plate's key index. ARGV: key id, control channel, payload.
 */
const DELETE_KEY = `
local hash = redis.call('HGET', KEYS[1], ARGV[1])
if not hash then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('PUBLISH', ARGV[2], ARGV[3])
return hash
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
 * Deletes a key's pointer only if it still points where the caller saw it (a compensation must
 * not delete a pointer someone else wrote since). Answers 1 or 0.
 * KEYS: pointer. ARGV: the value expected.
 */
const DELETE_IF = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`;

/**
 * Moves the plates of the layout before Redis Cluster support (one hash `plates`: id → record, and
 * indexes named without a hash tag) to today's, on one Redis only. Idempotent; answers how many
 * plates it moved. KEYS: the old plate hash, the plate list. ARGV: key prefix.
 */
const MIGRATE_PLATES = `
if redis.call('TYPE', KEYS[1]).ok ~= 'hash' then return 0 end
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local id, record = all[i], all[i + 1]
  redis.call('SET', ARGV[1] .. 'plate:{' .. id .. '}', record, 'NX')
  redis.call('SADD', KEYS[2], id)
  local old = ARGV[1] .. 'plate-keys:' .. id
  if redis.call('EXISTS', old) == 1 then redis.call('RENAME', old, ARGV[1] .. 'plate-keys:{' .. id .. '}') end
end
redis.call('DEL', KEYS[1])
return #all / 2
`;

/** The scripts as commands of a connection; arguments are KEYS then ARGV, as documented above. */
export interface StoreScripts {
  platePutToken(token: string, record: string, deleteAtMs: number): Promise<unknown>;
  plateReplacePlate(plate: string, record: string): Promise<number>;
  plateIndexKey(plate: string, plateKeys: string, keyId: string, hash: string): Promise<unknown>;
  plateDeletePlate(plate: string, plateKeys: string, control: string, payload: string): Promise<unknown>;
  plateDeleteKey(plateKeys: string, keyId: string, control: string, payload: string): Promise<unknown>;
  plateClaimToken(token: string, plateKeys: string, plateId: string, nowMs: number, tombstoneMs: number): Promise<unknown>;
  plateDeleteIf(pointer: string, expected: string): Promise<number>;
  plateMigratePlates(oldPlates: string, plateList: string, prefix: string): Promise<number>;
}

/**
 * Defines the scripts on a connection. ioredis sends each as EVALSHA and falls back to EVAL when
 * Redis answers NOSCRIPT (a restarted Redis has an empty script cache); a cluster client sends
 * each to the master of its first key's slot.
 */
export function withScripts<C extends Commands>(redis: C): C & StoreScripts {
  redis.defineCommand("platePutToken", { numberOfKeys: 1, lua: PUT_TOKEN });
  redis.defineCommand("plateReplacePlate", { numberOfKeys: 1, lua: REPLACE_PLATE });
  redis.defineCommand("plateIndexKey", { numberOfKeys: 2, lua: INDEX_KEY });
  redis.defineCommand("plateDeletePlate", { numberOfKeys: 2, lua: DELETE_PLATE });
  redis.defineCommand("plateDeleteKey", { numberOfKeys: 1, lua: DELETE_KEY });
  redis.defineCommand("plateClaimToken", { numberOfKeys: 2, lua: CLAIM_TOKEN });
  redis.defineCommand("plateDeleteIf", { numberOfKeys: 1, lua: DELETE_IF });
  redis.defineCommand("plateMigratePlates", { numberOfKeys: 2, lua: MIGRATE_PLATES });
  return redis as C & StoreScripts;
}
