import type { IncomingMessage, ServerResponse } from "node:http";
import { PlateError, isChannelName } from "@plate/protocol";
import type { Message } from "@plate/protocol";
import type { Services } from "../services.js";
import { cutOff, requireJsonType, tooLarge } from "./body.js";
import { loggablePath, requestIdOf } from "../core/request-id.js";
import { parseJson } from "./json.js";
import { channelParam, plateParam } from "./params.js";
import { answerHeaders, sendError } from "./raw-response.js";
import { matchRoute } from "./routes.js";
import { answerAtTurnEnd } from "./turn-answers.js";
import type { Matched, Route } from "./routes.js";

/** Routes 1 and 6 of the route table, and route 12's batch. */
const isPublish = (route: Route) => route.name === "publish" || route.name === "publishLegacy" || route.name === "publishBatch";

/** Most messages one batch publish may carry (spec, route 12). */
const BATCH_MAX_MESSAGES = 100;

/**
 * Routes 1 and 6, served straight on Node's request and response: the one route a backend calls at
 * high rates. Through Hono, each publish built a fetch `Request` and read its body through a web
 * stream: a CPU profile of 64 keep-alive publishers (load-tests, W3) put 42% of the node's time in
 * that route, half of it in `Request` construction and stream reads, for ~1,500 publishes/s on one
 * core. Here the body is read from the request's own chunks. (Most keep-alive publishes never get
 * here: the fast lane, fast-lane.ts, serves them on the socket. This serves what it hands over.)
 *
 * Answers whether it took the request (a POST to a publish path); anything else goes to Hono.
 * Checks run in the documented order: names, key, scope and channel list, media type, size, JSON,
 * Idempotency-Key, rate, broker.
 */
export function createPublishHandler(services: Services): (req: IncomingMessage, res: ServerResponse) => boolean {
  return (req, res) => {
    if (req.method !== "POST") return false;
    const match = matchPublish(req.url ?? "");
    if (match === undefined) return false;
    const started = performance.now();
    const requestId = requestIdOf(req.headers["x-request-id"]);
    const headers = answerHeaders(services, req.headers.origin, requestId);
    publishAnswer(services, match, req.headers, (maxBytes) => readBody(req, maxBytes))
      .then((text) => {
        // Added to the one headers object: spreading it into another was 3% of W3's CPU.
        headers["Content-Type"] = "application/json";
        headers["Content-Length"] = String(Buffer.byteLength(text));
        answerAtTurnEnd(res, headers, text);
        if (services.log.debugEnabled) {
          services.log.debug("publish", { requestId, path: loggablePath(req.url ?? ""), status: 200, ms: Math.round(performance.now() - started) });
        }
      })
      .catch((err: unknown) => sendError(services, req, res, headers, err, "publish refused"));
    return true;
  };
}

/** The publish route (1, 6 or 12) a request target (query and all) names, or undefined. */
export function matchPublish(url: string): Matched | undefined {
  const query = url.indexOf("?");
  return matchRoute("POST", query < 0 ? url : url.slice(0, query), isPublish);
}

/** The most body bytes the publish route `match` takes (`MAX_MESSAGE_BYTES`, or `MAX_BATCH_BYTES` for route 12). */
export function publishBodyLimit(services: Services, match: Matched): number {
  return match.route.name === "publishBatch" ? services.config.maxBatchBytes : services.config.maxMessageBytes;
}

/** The request headers a publish reads, by lower-case name, as Node's `req.headers` holds them. */
export interface PublishHeaders {
  readonly authorization?: string | undefined;
  readonly "content-type"?: string | undefined;
  readonly "idempotency-key"?: string | string[] | undefined;
}

/**
 * A request's body as UTF-8 text, refused (413) past `maxBytes`: at once when it is read already
 * (the fast lane's; a refusal thrown), else when it has come.
 */
export type BodyReader = (maxBytes: number) => string | Promise<string>;

/**
 * Publishes what the request to `match` (a publish route) carries, and answers the 200 body's JSON
 * text; throws the refusal. `readBody(maxBytes)` gives the body. Shared by Node's request (above)
 * and the fast lane.
 */
export function publishAnswer(services: Services, match: Matched, headers: PublishHeaders, readBody: BodyReader): Promise<string> {
  return match.route.name === "publishBatch"
    ? publishBatch(services, headers, readBody, match.params.plateId!)
    : publish(services, headers, readBody, match.params.plateId!, match.params.channel!);
}

async function publish(
  services: Services,
  headers: PublishHeaders,
  readBody: BodyReader,
  plate: string,
  channel: string,
): Promise<string> {
  const started = performance.now();
  const { tenancy, config } = services;
  const topic = { plateId: plateParam(plate), pattern: false, channel: channelParam(channel) } as const;
  // A cached key and body already read cost no await (`Tenancy.cachedKey`).
  const key = tenancy.cachedKey(topic.plateId, headers.authorization) ?? (await tenancy.authenticate(topic.plateId, headers.authorization));
  tenancy.authorize(key, "publish", topic);
  requireJsonType(headers["content-type"]);
  const text = readBody(config.maxMessageBytes);
  const { body, event, volatile } = messageBody(typeof text === "string" ? text : await text);
  const idempotencyKey = idempotencyKeyHeader(headers["idempotency-key"]);
  // Idempotency keys belong to the API key that sends them: another key's use of one neither
  // blocks this publish nor tells this key what that publish was.
  const idempotency = idempotencyKey === undefined ? undefined : { key: idempotencyKey, owner: key.id };
  const { message, repeated } = await services.publisher.publish(topic.plateId, topic.channel, body, { idempotency, event, volatile });
  if (repeated && message.channel !== topic.channel) {
    // No channel named: a key limited to some channels must not learn others' names here.
    throw new PlateError("conflict", "This Idempotency-Key was already used for a publish to another channel; use a new key.");
  }
  services.metrics.publishSeconds.observe((performance.now() - started) / 1000);
  return '{"data":{"id":"' + message.id + '","channel":"' + message.channel + '","timestamp":"' + message.timestamp + '"}}';
}

/**
 * Route 12's batch: `{"messages":[{"channel","message","event"?}...]}`, 1 to 100 of them, published in
 * order, each atomically. Every item is checked before anything is published (names, the key's
 * scope and channel list, each message's size); the first that fails rejects the whole batch with
 * its `index`. Answers `{"data":[{"id","channel","timestamp"}...]}` in the order given. When the
 * broker fails part way, 503 `broker_unavailable` names the first message not published (`index`);
 * those before it were published.
 */
async function publishBatch(services: Services, headers: PublishHeaders, readBody: BodyReader, plate: string): Promise<string> {
  const started = performance.now();
  const { tenancy, config } = services;
  const plateId = plateParam(plate);
  const key = await tenancy.authenticate(plateId, headers.authorization);
  requireJsonType(headers["content-type"]);
  const parsed = parseJson(await readBody(config.maxBatchBytes), 'send {"messages": [{"channel": "...", "message": <any JSON value>}, ...]}.');
  const messages = typeof parsed === "object" && parsed !== null && !Array.isArray(parsed) ? (parsed as { messages?: unknown }).messages : undefined;
  if (!Array.isArray(messages) || messages.length === 0 || messages.length > BATCH_MAX_MESSAGES) {
    throw new PlateError("missing_message", `The body needs "messages": an array of 1 to ${BATCH_MAX_MESSAGES} {"channel", "message"}.`);
  }
  const items = messages.map((item: unknown, index) => {
    try {
      if (typeof item !== "object" || item === null || Array.isArray(item) || !Object.hasOwn(item, "message")) {
        throw new PlateError("missing_message", 'Each item needs "channel" and a "message" member.');
      }
      const { channel, message, event } = item as { channel?: unknown; message: unknown; event?: unknown };
      const topic = { plateId, pattern: false, channel: channelParam(typeof channel === "string" ? channel : "") } as const;
      tenancy.authorize(key, "publish", topic);
      const body = JSON.stringify(message);
      if (Buffer.byteLength(body) > config.maxMessageBytes) throw tooLarge(config.maxMessageBytes);
      return { channel: topic.channel, body, event: eventName(event), volatile: volatileText(item) };
    } catch (err) {
      if (!(err instanceof PlateError)) throw err;
      throw new PlateError(err.code, `messages[${index}]: ${err.message}`, { index });
    }
  });
  const outcomes = await services.publisher.publishBatch(plateId, items);
  const failed = outcomes.findIndex((outcome) => outcome instanceof PlateError);
  if (failed >= 0) {
    const err = outcomes[failed] as PlateError;
    throw new PlateError(err.code, `messages[${failed}] and maybe later ones were not published (those before were): ${err.message}`, {
      index: failed,
      retryAfterS: err.retryAfterS,
    });
  }
  services.metrics.publishSeconds.observe((performance.now() - started) / 1000);
  const answers = (outcomes as Message[]).map((m) => '{"id":"' + m.id + '","channel":"' + m.channel + '","timestamp":"' + m.timestamp + '"}');
  return '{"data":[' + answers.join(",") + "]}";
}

/** Visible ASCII, 1 to 255 characters: what an `Idempotency-Key` may hold. */
const IDEMPOTENCY_KEY = /^[\x21-\x7e]{1,255}$/;

/** The `Idempotency-Key` header, if sent; `invalid_parameter` when it is not a usable key. */
function idempotencyKeyHeader(value: string | string[] | undefined): string | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== "string" || !IDEMPOTENCY_KEY.test(value)) {
    throw new PlateError("invalid_parameter", "Idempotency-Key must be 1 to 255 visible ASCII characters.");
  }
  return value;
}

/**
 * The body as UTF-8 text, refused (413) from its `Content-Length` before reading, or as soon as
 * the streamed bytes pass `maxBytes`: an oversized body is never held whole.
 */
function readBody(req: IncomingMessage, maxBytes: number): Promise<string> {
  if (Number(req.headers["content-length"] ?? "0") > maxBytes) return Promise.reject(tooLarge(maxBytes));
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size > maxBytes) {
        req.off("data", onData);
        req.pause();
        reject(tooLarge(maxBytes));
        return;
      }
      chunks.push(chunk);
    };
    req.on("data", onData);
    req.once("end", () => resolve((chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size)).toString("utf8")));
    req.once("error", (err) => reject(cutOff(err)));
  });
}

/**
 * The JSON text of the published value and its event name: the body must be an object with a
 * `message` member (`null` counts when written), and may name an `event`. The value is
 * re-serialized once here, so every subscriber gets the same compact text.
 */
function messageBody(text: string): { body: string; event: string | undefined; volatile: string | undefined } {
  const parsed = parseJson(text, 'send {"message": <any JSON value>}.');
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed) || !Object.hasOwn(parsed, "message")) {
    throw new PlateError("missing_message", 'The body needs a "message" member: {"message": <any JSON value>}.');
  }
  return {
    body: JSON.stringify((parsed as { message: unknown }).message),
    event: eventName((parsed as { event?: unknown }).event),
    volatile: volatileText(parsed),
  };
}

/**
 * A body's or an item's `"volatile"` (route 13) as JSON text: absent, or any JSON value (`null`
 * counts when written). Its size is the publisher's to check, as for every route.
 */
function volatileText(holder: object): string | undefined {
  return Object.hasOwn(holder, "volatile") ? JSON.stringify((holder as { volatile: unknown }).volatile) : undefined;
}

/** An item's or a body's `"event"`: absent, or a name as for channels (`invalid_parameter` otherwise). */
function eventName(value: unknown): string | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== "string" || !isChannelName(value)) {
    throw new PlateError("invalid_parameter", '"event" is a name of 1 to 200 of A-Z, a-z, 0-9, _ . : @ = ~ and -.');
  }
  return value;
}
