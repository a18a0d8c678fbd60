import { createHash } from "node:crypto";
import { customAlphabet, nanoid } from "nanoid";
import type { ClientToken, MessageId, PlateId } from "@plate/protocol";

/** Length of a client token: 32 url-safe characters are 192 bits (the spec asks for 128+). */
const CLIENT_TOKEN_CHARS = 32;
/** Length of an API key secret after its `pk_` prefix: 40 characters, 240 bits. */
const SECRET_CHARS = 40;
const ID_CHARS = 12;
const alnum = customAlphabet("0123456789abcdefghijklmnopqrstuvwxyz", ID_CHARS);

/** A message id: opaque and unique within the plate (21 url-safe random characters). */
export function newMessageId(): MessageId {
  return nanoid<MessageId>();
}

export function newClientToken(): ClientToken {
  return nanoid<ClientToken>(CLIENT_TOKEN_CHARS);
}

export function newKeySecret(): string {
  return "pk_" + nanoid(SECRET_CHARS);
}

export function newKeyId(): string {
  return "key_" + alnum();
}

/** A new signing key id (a token's `kid`). */
export function newSigningKeyId(): string {
  return "sk_" + alnum();
}

/**
 * The id of a `BOOTSTRAP_PLATES` key: derived from its secret (12 hex characters of a SHA-256 over
 * a domain tag and the secret), so every node provisioning the same secret names the same key.
 */
export function bootstrapKeyId(secret: string): string {
  return "key_" + createHash("sha256").update("plate-bootstrap-key\0" + secret).digest("hex").slice(0, ID_CHARS);
}

export function newPlateId(): PlateId {
  return ("plate_" + alnum()) as PlateId;
}

/** How a key secret is stored: hex SHA-256. Secrets are random and long, so no salt or stretching is needed. */
export function hashSecret(secret: string): string {
  return createHash("sha256").update(secret).digest("hex");
}
