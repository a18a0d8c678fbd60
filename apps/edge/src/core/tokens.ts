import { PlateError } from "@plate/protocol";
import type { Usage } from "./usage.js";
import type { ClientToken, PlateId, Topic } from "@plate/protocol";
import type { Store, TokenRecord } from "@plate/store";
import type { Metrics } from "../metrics.js";
import { newClientToken } from "./ids.js";

/** The spec's default `expiry`/`ttl` of a client token, in ms. */
export const CLIENT_TOKEN_DEFAULT_TTL_MS = 300_000;
/** The spec's largest `expiry`/`ttl`, in ms. */
export const CLIENT_TOKEN_MAX_TTL_MS = 600_000;

/** Raw parameters of route 4, from the query string (strings) or a JSON body (any JSON value). */
export type TokenParams = Readonly<Record<string, unknown>>;

/** Limits of minting that are settings of the node. */
export interface TokenLimits {
  readonly maxDurationMs: number;
  readonly maxUses: number;
}

/** Route 4's answer. */
export interface MintedToken {
  readonly path: string;
  readonly token: ClientToken;
  readonly channel: string;
  readonly pattern: boolean;
  /** With several topics: the channels, and the patterns, a connection made with it subscribes to. */
  readonly channels?: readonly string[];
  readonly patterns?: readonly string[];
  readonly expiresAt: string;
  readonly maxUses: number;
  readonly maxDuration: number;
  /** The filter the path enforces (route 13), when it was minted with one. */
  readonly filter?: unknown;
}

/** Client tokens: minted by a backend's key (route 4), spent by an untrusted client (route 5). */
export class Tokens {
  constructor(
    private readonly store: Store,
    private readonly limits: TokenLimits,
    private readonly metrics: Metrics,
    /** Where minted tokens are metered, per plate. */
    private readonly usage?: Pick<Usage, "count">,
  ) {}

  /** Validates the parameters other than `pattern` (the caller reads it to build `topic`). */
  parse(params: TokenParams): { maxDurationMs: number; ttlMs: number; maxUses: number } {
    const maxDurationMs = integerParam(params, "max_dur", 0, 0, this.limits.maxDurationMs);
    const expiry = integerParam(params, "expiry", undefined, 1, CLIENT_TOKEN_MAX_TTL_MS);
    const ttl = integerParam(params, "ttl", undefined, 1, CLIENT_TOKEN_MAX_TTL_MS);
    if (expiry !== undefined && ttl !== undefined && expiry !== ttl) {
      throw new PlateError("invalid_parameter", '"expiry" and "ttl" are the same setting; give one, or equal values.');
    }
    const ttlMs = expiry ?? ttl ?? CLIENT_TOKEN_DEFAULT_TTL_MS;
    const maxUses = integerParam(params, "max_uses", 1, 0, this.limits.maxUses);
    return { maxDurationMs, ttlMs, maxUses };
  }

  /**
   * Mints a token for `topics` (the first is the path's; more come from `channels` and `patterns`)
   * on behalf of `keyId`.
   */
  /** `filter`: the JSON text of the filter the path enforces (route 13), already checked. */
  async mint(
    keyId: string,
    topics: readonly [Topic, ...Topic[]],
    params: TokenParams,
    filter?: string,
    /** The plate's mint rate (`CLIENT_TOKEN_MINT_RATE_PER_S`, its burst), over every node: past it, `rate_limited`. */
    rate?: { readonly perS: number; readonly burst: number },
    /** The plate's token budget in bytes (`CLIENT_TOKEN_BYTES_PER_PLATE`; 0 = none): past it, `quota_exceeded`. */
    maxBytes = 0,
  ): Promise<MintedToken> {
    const { maxDurationMs, ttlMs, maxUses } = this.parse(params);
    const [topic] = topics;
    if (rate !== undefined && rate.perS > 0) {
      const waitMs = await this.store.takeRate(topic.plateId, "mint", rate.perS, rate.burst, 1);
      if (waitMs > 0) {
        this.metrics.tokens.inc({ outcome: "rate_limited" });
        throw new PlateError("rate_limited", `This plate may mint ${rate.perS} client paths a second; slow down.`, { retryAfterS: Math.max(1, Math.ceil(waitMs / 1000)) });
      }
    }
    const several = topics.length > 1;
    const record: TokenRecord = {
      token: newClientToken(),
      plateId: topic.plateId,
      channel: topic.channel,
      pattern: topic.pattern,
      ...(several ? { topics: topics.map((t) => ({ channel: t.channel, pattern: t.pattern })) } : {}),
      keyId,
      maxDurationMs,
      maxUses,
      expiresAt: Date.now() + ttlMs,
      ...(filter === undefined ? {} : { filter }),
    };
    if (!(await this.store.putToken(record, maxBytes))) {
      this.metrics.tokens.inc({ outcome: "quota_exceeded" });
      throw new PlateError(
        "quota_exceeded",
        `This plate keeps at most ${maxBytes} bytes of client paths; wait until some are forgotten (TOKEN_TOMBSTONE_MS after their ttl), or mint them with a shorter ttl.`,
      );
    }
    this.metrics.tokens.inc({ outcome: "minted" });
    this.usage?.count(topic.plateId, "tokensMinted", 1);
    return {
      path: `/${topic.plateId}/s/${record.token}`,
      token: record.token,
      channel: topic.channel,
      pattern: topic.pattern,
      ...(several
        ? { channels: topics.filter((t) => !t.pattern).map((t) => t.channel), patterns: topics.filter((t) => t.pattern).map((t) => t.channel) }
        : {}),
      expiresAt: new Date(record.expiresAt).toISOString(),
      maxUses,
      maxDuration: maxDurationMs,
      ...(filter === undefined ? {} : { filter: JSON.parse(filter) as unknown }),
    };
  }

  /** Spends one use of a token; throws the spec's 404/410 codes when it cannot. */
  async claim(plateId: PlateId, token: ClientToken): Promise<TokenRecord> {
    const result = await this.store.claimToken(plateId, token, Date.now());
    if (!result.ok) {
      this.metrics.tokens.inc({ outcome: result.code });
      throw new PlateError(result.code, CLAIM_MESSAGES[result.code]);
    }
    this.metrics.tokens.inc({ outcome: "accepted" });
    return result.token;
  }
}

const CLAIM_MESSAGES = {
  invalid_client_socket: "This client socket path does not exist; mint a new one.",
  expired_client_socket: "This client socket path has expired; mint a new one.",
  exhausted_client_socket: "This client socket path has been used its max_uses times; mint a new one.",
} as const;

/** The topics of a token as stored: its `topics`, or its one channel or pattern. */
export function tokenTopics(record: TokenRecord): Topic[] {
  const list = record.topics ?? [{ channel: record.channel, pattern: record.pattern }];
  return list.map((t) => ({ plateId: record.plateId, pattern: t.pattern, channel: t.channel }) as Topic);
}

/**
 * Reads route 4's `channels` or `patterns`: a JSON array of strings, or in a query one or more
 * values, each a comma-separated list (names hold no comma). Absent: none.
 */
export function listParam(params: TokenParams, name: string): string[] {
  const value = params[name];
  if (value === undefined || value === null || value === "") return [];
  const items = Array.isArray(value) ? value : [value];
  const names: string[] = [];
  for (const item of items) {
    if (typeof item !== "string") throw new PlateError("invalid_parameter", `"${name}" must be a list of names.`);
    if (Array.isArray(value)) names.push(item);
    else names.push(...item.split(",").filter((part) => part !== ""));
  }
  return names;
}

/** Reads the boolean `pattern` parameter (`true`/`false`, also as text, `1`/`0`). */
export function booleanParam(params: TokenParams, name: string): boolean {
  const value = params[name];
  if (value === undefined || value === null || value === "") return false;
  if (value === true || value === "true" || value === "1" || value === 1) return true;
  if (value === false || value === "false" || value === "0" || value === 0) return false;
  throw new PlateError("invalid_parameter", `"${name}" must be true or false.`);
}

function integerParam<D extends number | undefined>(
  params: TokenParams,
  name: string,
  fallback: D,
  min: number,
  max: number,
): number | D {
  const raw = params[name];
  if (raw === undefined || raw === null || raw === "") return fallback;
  const value = typeof raw === "string" && /^-?\d+$/.test(raw.trim()) ? Number(raw) : raw;
  if (typeof value !== "number" || !Number.isSafeInteger(value) || value < min || value > max) {
    throw new PlateError("invalid_parameter", `"${name}" must be a whole number from ${min} to ${max}.`);
  }
  return value;
}
