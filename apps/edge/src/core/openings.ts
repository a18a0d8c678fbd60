import { PlateError, isClientTokenShape, readFilterParam } from "@plate/protocol";
import { signingKeyOwner } from "@plate/store";
import type { FilterSpec, PlateId, Topic } from "@plate/protocol";
import type { Services } from "../services.js";
import type { Wire } from "./connection.js";
import type { ConnectionSlot } from "./connections.js";
import { claimsGrant, keyGrant, tokenGrant } from "./grants.js";
import { looksSigned } from "./signed-tokens.js";
import { parseAuthorization } from "./tenancy.js";
import type { TokenClaims } from "./signed-tokens.js";
import type { Grant } from "./grants.js";
import type { Asked } from "./subscriptions.js";
import { tokenTopics } from "./tokens.js";

/** How a connection opens, whatever its transport: its subscriptions, and for v2 what it may subscribe to later. */
export interface Opening {
  readonly plateId: PlateId;
  /** The key that authorized it (directly, or by minting its client token). */
  readonly keyId: string;
  readonly wire: Wire;
  readonly asked: readonly Asked[];
  readonly maxDurationMs?: number;
  readonly slot?: ConnectionSlot;
  /** v2: what its credential allows it to subscribe to later. */
  readonly grant?: Grant;
  /** The client token it was opened with (route 5), for route 9's POST. */
  readonly token?: string;
  /** The signed client token's claims (route 11), for its expiry and refresh. */
  readonly claims?: TokenClaims;
  /** The filter its credential enforces on every subscription (a client path minted with one). */
  readonly filter?: FilterSpec;
}

/**
 * Route 5, on either transport: claims one use of `token` with one of the plate's connection slots
 * held (a connect refused at the plate's limit spends none), then opens with what the token names:
 * a v1 connection for a one-topic token, a v2 one (route 9) for a token minted with several.
 * `since(topic)`: where the client asks that topic to resume. Throws the spec's 404/410 codes.
 */
export async function openWithClientToken<T>(
  services: Pick<Services, "connections" | "tokens" | "tenancy">,
  plateId: PlateId,
  token: string,
  since: (topic: Topic) => string | undefined,
  open: (opening: Opening) => Promise<T>,
  /** The client's own filter (`?filter=`), ANDed with the one the path was minted with. */
  clientFilter?: FilterSpec,
): Promise<T> {
  if (!isClientTokenShape(token)) {
    throw new PlateError("invalid_client_socket", "This client socket path does not exist; mint a new one.");
  }
  const { connections } = await services.tenancy.limitsOf(plateId);
  await services.connections.learn(plateId, connections);
  return services.connections.holding(plateId, async (slot) => {
    const record = await services.tokens.claim(plateId, token);
    const topics = tokenTopics(record);
    const asked = topics.map((topic) => ({ topic, since: since(topic), filter: clientFilter }));
    const minted = record.filter === undefined ? undefined : readFilterParam(record.filter);
    const opening = { plateId, keyId: record.keyId, maxDurationMs: record.maxDurationMs, slot, asked, ...(minted === undefined ? {} : { filter: minted }) };
    if (record.topics === undefined) return open({ ...opening, wire: "v1" });
    return open({ ...opening, wire: "v2", grant: tokenGrant(topics), token });
  }, connections);
}

/** Who opens a route 9 connection: the key (or signing key) to revoke it by, what it may subscribe to, and a signed token's claims. */
export interface RealtimeCredential {
  readonly keyId: string;
  readonly grant: Grant;
  readonly claims?: TokenClaims;
}

/**
 * Route 9's credential (spec, route 9): `Authorization` holding an API key or a signed client
 * token, else `?token=` (a signed token, for EventSource), else `frameAuth`'s first frame (WebSocket
 * only). A connection made with a signed token names its signing key (`signingKeyOwner(kid)`).
 */
export async function realtimeCredential(
  services: Pick<Services, "tenancy" | "signedTokens">,
  plateId: PlateId,
  header: string | undefined,
  queryToken: string | undefined,
  frameAuth?: () => Promise<{ key: string; signed?: true } | undefined>,
): Promise<RealtimeCredential | undefined> {
  const bearer = parseAuthorization(header);
  if (bearer !== undefined && looksSigned(bearer)) return signed(await services.signedTokens.verify(plateId, bearer));
  if (header !== undefined) {
    const key = await services.tenancy.authenticate(plateId, header);
    return { keyId: key.id, grant: keyGrant(services.tenancy, key) };
  }
  if (queryToken !== undefined) return signed(await services.signedTokens.verify(plateId, queryToken));
  if (frameAuth === undefined) throw new PlateError("missing_api_key", 'Send your API key or a signed client token as "Authorization: Bearer <...>", or ?token=<signed client token>.');
  const auth = await frameAuth();
  if (auth === undefined) return undefined;
  if (auth.signed === true) return signed(await services.signedTokens.verify(plateId, auth.key));
  const key = await services.tenancy.authenticateSecret(plateId, auth.key);
  return { keyId: key.id, grant: keyGrant(services.tenancy, key) };
}

function signed(claims: TokenClaims): RealtimeCredential {
  return { keyId: signingKeyOwner(claims.kid), grant: claimsGrant(claims), claims };
}
