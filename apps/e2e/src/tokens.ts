import { SignJWT } from "jose";

/**
 * Signed client tokens (route 11) as an app's backend mints them, with `jose` as the README shows:
 * a plate's signing key made with the admin API, and HS256 tokens for one user.
 */

/** A plate's signing secret (`POST /admin/plates/{id}/signing-keys`). */
export interface SigningKey {
  readonly kid: string;
  readonly secret: Uint8Array;
}

/** What a token lets its user do (route 11's claims). */
export interface UserClaims {
  readonly sub: string;
  readonly channels?: readonly string[];
  readonly patterns?: readonly string[];
  /** The channel patterns the user may publish to. */
  readonly publish?: readonly string[];
  /** Whether the user may track presence (route 10) where it may subscribe. */
  readonly presence?: boolean;
}

export async function createSigningKey(url: string, plate: string, adminToken: string): Promise<SigningKey> {
  const res = await fetch(`${url}/admin/plates/${plate}/signing-keys`, {
    method: "POST",
    headers: { Authorization: `Bearer ${adminToken}`, "Content-Type": "application/json" },
    body: "{}",
  });
  if (res.status !== 201 && res.status !== 200) throw new Error(`signing key: HTTP ${res.status} ${await res.text()}`);
  const { data } = (await res.json()) as { data: { id: string; secret: string } };
  return { kid: data.id, secret: new Uint8Array(Buffer.from(data.secret, "base64url")) };
}

/** A token of `claims` that expires `seconds` from now (JWT `exp` is whole seconds). */
export function mintToken(key: SigningKey, claims: UserClaims, seconds: number): Promise<string> {
  return new SignJWT({ ...claims })
    .setProtectedHeader({ alg: "HS256", kid: key.kid })
    .setExpirationTime(Math.floor(Date.now() / 1000) + seconds)
    .sign(key.secret);
}
