import { randomBytes } from "node:crypto";
import { errors, decodeProtectedHeader, importSPKI, jwtVerify } from "jose";
import type { CryptoKey, JWTPayload, KeyObject } from "jose";
import { PlateError, isChannelName, isChannelPattern } from "@plate/protocol";
import type { ChannelName, ChannelPattern, PlateId } from "@plate/protocol";
import type { SigningAlgorithm, SigningKeyRecord, Store } from "@plate/store";
import { newSigningKeyId } from "./ids.js";

/** Bytes of a new HS256 signing secret (256 bits, the hash's size, as RFC 7518 3.2 asks at least). */
const HS256_SECRET_BYTES = 32;
/** Longest `sub` and longest `info` (as JSON) a token may carry, in characters. */
const MAX_SUB_CHARS = 256;
const MAX_INFO_CHARS = 4096;
/** Most channels, patterns and publish patterns one token may list, each. */
const MAX_TOKEN_TOPICS = 200;
/** Longest token accepted, in characters (a header, an `?token=`, or a frame). */
const MAX_SIGNED_TOKEN_CHARS = 8192;
/** Most signing keys a plate may hold (rotation needs two or three). */
const MAX_SIGNING_KEYS = 20;

/** What a valid signed client token (route 11) says, read once at verification. */
export interface TokenClaims {
  readonly plateId: PlateId;
  readonly kid: string;
  /** The user (`sub`). */
  readonly sub: string;
  /** Epoch ms after which the token no longer holds (`exp`). */
  readonly expiresAtMs: number;
  readonly channels: readonly ChannelName[];
  readonly patterns: readonly ChannelPattern[];
  /** Channel patterns it may publish to. */
  readonly publish: readonly ChannelPattern[];
  readonly presence: boolean;
  /** Small public JSON about the user, as sent. */
  readonly info: unknown;
}

/** A signing key as the admin API shows it: its secret only at creation. */
export interface SigningKeyView {
  readonly id: string;
  readonly alg: SigningAlgorithm;
  readonly createdAt: string;
  readonly publicKey?: string;
}

/** Whether `text` looks like a compact JWS (three base64url parts), not an API key. */
export function looksSigned(text: string): boolean {
  return /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/.test(text);
}

/**
 * A plate's signing keys (route 11) and the verification of the tokens they sign, with `jose`
 * (never hand-written crypto). Refused, with 401 `invalid_token`: a token that is not a JWS, a
 * header without a `kid` of the plate's keys, an algorithm other than that key's own (so `none`,
 * and HS256 with an RSA public key as its secret, are never tried), a bad signature, a token not
 * yet valid (`nbf` in the future beyond the skew), and claims of the wrong shape; with 401
 * `token_expired`: a token past `exp` (plus the skew). `exp` and `sub` are required.
 */
export class SignedTokens {
  constructor(
    private readonly store: Store,
    /** Clock skew allowed on `exp`, `nbf` and `iat`, in s (`SIGNED_TOKEN_CLOCK_SKEW_S`). */
    private readonly clockSkewS: number,
  ) {}

  /** The clock skew allowed, in ms: a token holds until its `exp` plus this. */
  get skewMs(): number {
    return this.clockSkewS * 1000;
  }

  /** Adds a key: HS256 with a new secret (answered once), or ES256 / RS256 with the given public key. */
  async create(plateId: PlateId, input: unknown): Promise<SigningKeyView & { readonly secret?: string }> {
    const body = (typeof input === "object" && input !== null ? input : {}) as { alg?: unknown; publicKey?: unknown };
    const alg = body.alg ?? "HS256";
    if (alg !== "HS256" && alg !== "ES256" && alg !== "RS256") {
      throw new PlateError("invalid_parameter", '"alg" is one of HS256 (a secret made here), ES256 and RS256 (give "publicKey").');
    }
    if ((await this.store.listSigningKeys(plateId)).length >= MAX_SIGNING_KEYS) {
      throw new PlateError("conflict", `A plate holds at most ${MAX_SIGNING_KEYS} signing keys; delete an old one first.`);
    }
    let key: string;
    if (alg === "HS256") {
      key = randomBytes(HS256_SECRET_BYTES).toString("base64url");
    } else {
      if (typeof body.publicKey !== "string") throw new PlateError("invalid_parameter", `"publicKey" (SPKI PEM) is required for ${alg}.`);
      try {
        await importSPKI(body.publicKey, alg);
      } catch {
        throw new PlateError("invalid_parameter", `"publicKey" is not an SPKI PEM public key for ${alg}.`);
      }
      key = body.publicKey;
    }
    const record: SigningKeyRecord = { id: newSigningKeyId(), plateId, alg, key, createdAt: new Date().toISOString() };
    await this.store.createSigningKey(record);
    return alg === "HS256" ? { ...view(record), secret: key } : view(record);
  }

  async list(plateId: PlateId): Promise<SigningKeyView[]> {
    return (await this.store.listSigningKeys(plateId)).map(view);
  }

  delete(plateId: PlateId, id: string): Promise<boolean> {
    return this.store.deleteSigningKey(plateId, id);
  }

  /** The claims of a valid token of `plateId`, or `invalid_token` / `token_expired`. */
  async verify(plateId: PlateId, token: string): Promise<TokenClaims> {
    if (token.length > MAX_SIGNED_TOKEN_CHARS || !looksSigned(token)) throw invalid("It is not a signed token (JWS compact form).");
    let kid: string | undefined;
    try {
      kid = decodeProtectedHeader(token).kid;
    } catch {
      throw invalid("Its header cannot be read.");
    }
    if (typeof kid !== "string" || kid === "") throw invalid('Its header names no "kid".');
    const record = await this.store.findSigningKey(plateId, kid);
    if (record === undefined) throw invalid("Its kid is not a signing key of this plate.");
    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(token, await verificationKey(record), {
        algorithms: [record.alg],
        clockTolerance: this.clockSkewS,
        requiredClaims: ["exp", "sub"],
      }));
    } catch (err) {
      if (err instanceof errors.JWTExpired) throw new PlateError("token_expired", "The token has expired; get a fresh one.");
      throw invalid("Its signature, algorithm or times do not hold.");
    }
    return claimsOf(plateId, kid, payload);
  }
}

function view(record: SigningKeyRecord): SigningKeyView {
  return { id: record.id, alg: record.alg, createdAt: record.createdAt, ...(record.alg === "HS256" ? {} : { publicKey: record.key }) };
}

async function verificationKey(record: SigningKeyRecord): Promise<Uint8Array | CryptoKey | KeyObject> {
  return record.alg === "HS256" ? Buffer.from(record.key, "base64url") : importSPKI(record.key, record.alg);
}

function invalid(why: string): PlateError {
  return new PlateError("invalid_token", `The token is not valid: ${why}`);
}

/** The claims in the shapes Plate reads; anything else is `invalid_token`. */
function claimsOf(plateId: PlateId, kid: string, payload: JWTPayload): TokenClaims {
  const sub = payload.sub!;
  if (sub === "" || sub.length > MAX_SUB_CHARS) throw invalid(`"sub" has 1 to ${MAX_SUB_CHARS} characters.`);
  const channels = names(payload.channels, "channels", isChannelName);
  const patterns = names(payload.patterns, "patterns", isChannelPattern);
  const publish = names(payload.publish, "publish", isChannelPattern);
  if (payload.presence !== undefined && typeof payload.presence !== "boolean") throw invalid('"presence" is true or false.');
  if (payload.info !== undefined && JSON.stringify(payload.info).length > MAX_INFO_CHARS) throw invalid(`"info" is at most ${MAX_INFO_CHARS} characters of JSON.`);
  return { plateId, kid, sub, expiresAtMs: payload.exp! * 1000, channels, patterns, publish, presence: payload.presence === true, info: payload.info };
}

function names<T extends string>(value: unknown, claim: string, valid: (text: string) => text is T): T[] {
  if (value === undefined) return [];
  if (!Array.isArray(value) || value.length > MAX_TOKEN_TOPICS || !value.every((v): v is T => typeof v === "string" && valid(v))) {
    throw invalid(`"${claim}" is a list of at most ${MAX_TOKEN_TOPICS} names.`);
  }
  return value;
}
