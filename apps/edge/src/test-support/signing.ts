import { SignJWT } from "jose";
import { adminCall } from "./admin.js";

/** A signing key made through the admin API, and a signer of client tokens with it (HS256). */
export interface TestSigner {
  readonly kid: string;
  readonly secret: Uint8Array;
  /** A token with `claims` (give `sub`), expiring in `expiresIn` (jose's forms: "5m", or epoch seconds). */
  sign(claims: Record<string, unknown>, expiresIn?: string | number): Promise<string>;
}

/** Adds an HS256 signing key to `plate` on the node at `base`. */
export async function testSigner(base: string, plate = "acme"): Promise<TestSigner> {
  const made = await adminCall(base, "POST", `/admin/plates/${plate}/signing-keys`, { body: {} });
  const kid = made.body.data.id as string;
  const secret = Buffer.from(made.body.data.secret as string, "base64url");
  return {
    kid,
    secret,
    sign: (claims, expiresIn = "5m") => new SignJWT(claims).setProtectedHeader({ alg: "HS256", kid }).setExpirationTime(expiresIn).sign(secret),
  };
}
