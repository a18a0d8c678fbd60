import type { Redis } from "ioredis";

/*
 * The Lua scripts of `RedisStore` (key layout: the top of redis-store.ts). Redis runs a script with
 * nothing in between, so each is one atomic step. Two of them build key names inside Lua (a key
 * record's name from a hash read in the script, with a prefix passed in ARGV); Redis Cluster forbids
 * keys it was not told of, and Plate does not support Redis Cluster.
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
 * Adds a key to a plate that exists, refusing a hash or a key id already taken; the plate cannot
 * be deleted between the check and the write. Answers 'ok', 'not_found' or 'conflict'.
 * KEYS: plates, key record, plate's key index. ARGV: plate id, key id, key hash, KeyRecord JSON.
 */
const CREATE_KEY = `
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 'not_found' end
if redis.call('EXISTS', KEYS[2]) == 1 or redis.call('HEXISTS', KEYS[3], ARGV[2]) == 1 then
  return 'conflict'
end
redis.call('SET', KEYS[2], ARGV[4])
redis.call('HSET', KEYS[3], ARGV[2], ARGV[3])
return 'ok'
`;

/**
 * Deletes a plate, every key record of its index and the index, then announces it. Publishing
 * inside the script means a deletion is never left unannounced by a node that dies after it.
 * Answers 1 when the plate existed, else 0 (and announces nothing).
 * KEYS: plates, plate's key index. ARGV: plate id, key record name prefix, control channel, payload.
 */
const DELETE_PLATE = `
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return 0 end
for _, hash in ipairs(redis.call('HVALS', KEYS[2])) do
  redis.call('DEL', ARGV[2] .. hash)
end
redis.call('DEL', KEYS[2])
redis.call('PUBLISH', ARGV[3], ARGV[4])
return 1
`;

/**
 * Revokes one key of one plate (a key id of another plate is not in this plate's index, so it is
 * not found), then announces it. Answers 1 when the key existed, else 0 (and announces nothing).
 * KEYS: plate's key index. ARGV: key id, key record name prefix, control channel, payload.
 */
const DELETE_KEY = `
local hash = redis.call('HGET', KEYS[1], ARGV[1])
if not hash then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('DEL', ARGV[2] .. hash)
redis.call('PUBLISH', ARGV[3], ARGV[4])
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
 * KEYS: plates. ARGV: plate id, PlateRecord JSON.
 */
const REPLACE_PLATE = `
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
`;

/** The scripts as commands of a connection; arguments are KEYS then ARGV, as documented above. */
export interface StoreScripts {
  platePutToken(token: string, record: string, deleteAtMs: number): Promise<unknown>;
  plateReplacePlate(plates: string, plateId: string, record: string): Promise<number>;
  plateCreateKey(
    plates: string,
    keyRecord: string,
    plateKeys: string,
    plateId: string,
    keyId: string,
    hash: string,
    record: string,
  ): Promise<unknown>;
  plateDeletePlate(
    plates: string,
    plateKeys: string,
    plateId: string,
    keyRecordPrefix: string,
    control: string,
    payload: string,
  ): Promise<unknown>;
  plateDeleteKey(
    plateKeys: string,
    keyId: string,
    keyRecordPrefix: string,
    control: string,
    payload: string,
  ): Promise<unknown>;
  plateClaimToken(
    token: string,
    plateKeys: string,
    plateId: string,
    nowMs: number,
    tombstoneMs: number,
  ): Promise<unknown>;
}

/**
 * Defines the scripts on a connection. ioredis sends each as EVALSHA and falls back to EVAL when
 * Redis answers NOSCRIPT (a restarted Redis has an empty script cache).
 */
export function withScripts(redis: Redis): Redis & StoreScripts {
  redis.defineCommand("platePutToken", { numberOfKeys: 1, lua: PUT_TOKEN });
  redis.defineCommand("plateReplacePlate", { numberOfKeys: 1, lua: REPLACE_PLATE });
  redis.defineCommand("plateCreateKey", { numberOfKeys: 3, lua: CREATE_KEY });
  redis.defineCommand("plateDeletePlate", { numberOfKeys: 2, lua: DELETE_PLATE });
  redis.defineCommand("plateDeleteKey", { numberOfKeys: 1, lua: DELETE_KEY });
  redis.defineCommand("plateClaimToken", { numberOfKeys: 2, lua: CLAIM_TOKEN });
  return redis as Redis & StoreScripts;
}
