import { SignJWT, exportSPKI, generateKeyPair } from "jose";
import type { CryptoKey } from "jose";
import { beforeAll, describe, expect, it } from "vitest";
import { PlateError } from "@plate/protocol";
import type { PlateId } from "@plate/protocol";
import { MemoryStore } from "@plate/store";
import { SignedTokens } from "./signed-tokens.js";

const PLATE = "acme" as PlateId;
const OTHER = "globex" as PlateId;
const SKEW_S = 5;

let tokens: SignedTokens;
let hs: { id: string; secret: Uint8Array };
let es: { id: string; privateKey: CryptoKey };
let rs: { id: string; privateKey: CryptoKey; pem: string };

beforeAll(async () => {
  const store = await MemoryStore.open({ tokenTombstoneMs: 1000, tokenSweepMs: 60_000 });
  for (const id of [PLATE, OTHER]) await store.createPlate({ id, name: id, createdAt: new Date().toISOString() });
  tokens = new SignedTokens(store, SKEW_S);
  const made = await tokens.create(PLATE, {});
  hs = { id: made.id, secret: Buffer.from(made.secret!, "base64url") };
  const ecPair = await generateKeyPair("ES256");
  es = { id: (await tokens.create(PLATE, { alg: "ES256", publicKey: await exportSPKI(ecPair.publicKey) })).id, privateKey: ecPair.privateKey };
  const rsaPair = await generateKeyPair("RS256");
  const pem = await exportSPKI(rsaPair.publicKey);
  rs = { id: (await tokens.create(PLATE, { alg: "RS256", publicKey: pem })).id, privateKey: rsaPair.privateKey, pem };
});

const now = () => Math.floor(Date.now() / 1000);

/** A token with `claims` (sub and exp in a minute by default), signed HS256 with the plate's secret. */
function signed(claims: Record<string, unknown> = {}, header: Record<string, unknown> = {}): Promise<string> {
  return new SignJWT({ sub: "ann", exp: now() + 60, ...claims }).setProtectedHeader({ alg: "HS256", kid: hs.id, ...header }).sign(hs.secret);
}

async function refusal(token: string, plate: PlateId = PLATE): Promise<string> {
  try {
    await tokens.verify(plate, token);
  } catch (err) {
    if (err instanceof PlateError) return err.code;
    throw err;
  }
  return "accepted";
}

describe("SignedTokens", () => {
  it("accepts tokens signed by the plate's HS256, ES256 and RS256 keys, and reads their claims", async () => {
    const claims = { channels: ["room.1"], patterns: ["user:*"], publish: ["room.*"], presence: true, info: { name: "Ann" } };
    const hsToken = await signed(claims);
    expect(await tokens.verify(PLATE, hsToken)).toMatchObject({ plateId: PLATE, kid: hs.id, sub: "ann", ...claims });
    const esToken = await new SignJWT({ sub: "bob" }).setProtectedHeader({ alg: "ES256", kid: es.id }).setExpirationTime("1m").sign(es.privateKey);
    expect((await tokens.verify(PLATE, esToken)).sub).toBe("bob");
    const rsToken = await new SignJWT({ sub: "cid" }).setProtectedHeader({ alg: "RS256", kid: rs.id }).setExpirationTime("1m").sign(rs.privateKey);
    expect((await tokens.verify(PLATE, rsToken)).expiresAtMs).toBeGreaterThan(Date.now());
    // No claims of access: a token that may do nothing yet (the grant decides).
    expect(await tokens.verify(PLATE, await signed())).toMatchObject({ channels: [], patterns: [], publish: [], presence: false });
  });

  it("answers token_expired past exp and the clock skew, and accepts one expired within the skew", async () => {
    expect(await refusal(await signed({ exp: now() - SKEW_S - 2 }))).toBe("token_expired");
    expect(await refusal(await signed({ exp: now() - 1 }))).toBe("accepted");
  });

  it("refuses, with invalid_token, tokens not yet valid (nbf), without exp or sub, of another plate's kid, with no or an unknown kid, tampered, unsigned (alg none), or HS256 signed with an RSA public key", async () => {
    expect(await refusal(await signed({ nbf: now() + SKEW_S + 60 }))).toBe("invalid_token");
    expect(await refusal(await new SignJWT({ sub: "ann" }).setProtectedHeader({ alg: "HS256", kid: hs.id }).sign(hs.secret))).toBe("invalid_token");
    expect(await refusal(await new SignJWT({ exp: now() + 60 }).setProtectedHeader({ alg: "HS256", kid: hs.id }).sign(hs.secret))).toBe("invalid_token");
    expect(await refusal(await signed(), OTHER)).toBe("invalid_token");
    expect(await refusal(await signed({}, { kid: "sk_unknown" }))).toBe("invalid_token");
    expect(await refusal(await new SignJWT({ sub: "ann", exp: now() + 60 }).setProtectedHeader({ alg: "HS256" }).sign(hs.secret))).toBe("invalid_token");
    const [header, payload, signature] = (await signed({ channels: ["room.1"] })).split(".");
    const widened = Buffer.from(JSON.stringify({ sub: "ann", exp: now() + 60, channels: ["secret"] })).toString("base64url");
    expect(await refusal(`${header}.${widened}.${signature}`)).toBe("invalid_token");
    expect(await refusal(`${header}.${payload}.${signature!.slice(0, -2)}AA`)).toBe("invalid_token");
    const none = Buffer.from(JSON.stringify({ alg: "none", kid: hs.id })).toString("base64url");
    expect(await refusal(`${none}.${payload}.`)).toBe("invalid_token");
    expect(await refusal(`${none}.${payload}.x`)).toBe("invalid_token");
    // Algorithm confusion: the RSA key's public PEM used as an HMAC secret under its kid.
    const confused = await new SignJWT({ sub: "ann", exp: now() + 60 }).setProtectedHeader({ alg: "HS256", kid: rs.id }).sign(new TextEncoder().encode(rs.pem));
    expect(await refusal(confused)).toBe("invalid_token");
    for (const junk of ["", "not-a-token", "a.b", "a.b.c", "x".repeat(9000)]) expect(await refusal(junk)).toBe("invalid_token");
  });

  it("refuses claims of the wrong shape with invalid_token", async () => {
    for (const claims of [
      { channels: "room.1" },
      { channels: ["bad name"] },
      { patterns: ["[a]"] },
      { publish: [7] },
      { presence: "yes" },
      { info: "x".repeat(5000) },
      { sub: "" },
      { channels: Array.from({ length: 201 }, (_, i) => `c${i}`) },
    ]) {
      expect(await refusal(await signed(claims)), JSON.stringify(claims).slice(0, 60)).toBe("invalid_token");
    }
  });

  it("makes keys only of the three algorithms, an ES or RS key only from a public key of its kind, and lists none with its secret", async () => {
    const codes: string[] = [];
    for (const input of [{ alg: "none" }, { alg: "HS512" }, { alg: "ES256" }, { alg: "RS256", publicKey: "not a key" }, { alg: "ES256", publicKey: rs.pem }]) {
      try {
        await tokens.create(PLATE, input);
        codes.push("created");
      } catch (err) {
        codes.push((err as PlateError).code);
      }
    }
    expect(codes).toEqual(Array(5).fill("invalid_parameter"));
    const listed = await tokens.list(PLATE);
    expect(listed.map((k) => k.alg).sort()).toEqual(["ES256", "HS256", "RS256"]);
    expect(JSON.stringify(listed)).not.toContain(Buffer.from(hs.secret).toString("base64url"));
  });

  it("refuses a token once its key is deleted", async () => {
    const made = await tokens.create(OTHER, {});
    const token = await new SignJWT({ sub: "x", exp: now() + 60 }).setProtectedHeader({ alg: "HS256", kid: made.id }).sign(Buffer.from(made.secret!, "base64url"));
    expect(await refusal(token, OTHER)).toBe("accepted");
    expect(await tokens.delete(OTHER, made.id)).toBe(true);
    expect(await refusal(token, OTHER)).toBe("invalid_token");
  });
});
