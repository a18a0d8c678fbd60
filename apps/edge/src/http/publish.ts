import type { IncomingMessage, ServerResponse } from "node:http";
import { PlateError } from "@plate/protocol";
import type { Services } from "../services.js";
import { cutOff, requireJsonType, tooLarge } from "./body.js";
import { loggablePath, requestIdOf } from "../core/request-id.js";
import { parseJson } from "./json.js";
import { channelParam, plateParam } from "./params.js";
import { answerHeaders, sendError } from "./raw-response.js";
import { matchRoute } from "./routes.js";
import type { Route } from "./routes.js";

/** Routes 1 and 6 of the route table. */
const isPublish = (route: Route) => route.name === "publish" || route.name === "publishLegacy";

/**
 * Routes 1 and 6, served straight on Node's request and response: the one route a backend calls at
 * high rates. Through Hono, each publish built a fetch `Request` and read its body through a web
 * stream: a CPU profile of 64 keep-alive publishers (load-tests, W3) put 42% of the node's time in
 * that route, half of it in `Request` construction and stream reads, for ~1,500 publishes/s on one
 * core. Here the body is read from the request's own chunks.
 *
 * Answers whether it took the request (a POST to a publish path); anything else goes to Hono.
 * Checks run in the documented order: names, key, scope and channel list, media type, size, JSON,
 * Idempotency-Key, rate, broker.
 */
export function createPublishHandler(services: Services): (req: IncomingMessage, res: ServerResponse) => boolean {
  return (req, res) => {
    if (req.method !== "POST") return false;
    const url = req.url ?? "";
    const query = url.indexOf("?");
    const match = matchRoute("POST", query < 0 ? url : url.slice(0, query), isPublish);
    if (match === undefined) return false;
    const started = performance.now();
    const requestId = requestIdOf(req.headers["x-request-id"]);
    const headers = answerHeaders(services, req, requestId);
    publish(services, req, match.params.plateId!, match.params.channel!)
      .then((text) => {
        // Added to the one headers object: spreading it into another was 3% of W3's CPU.
        headers["Content-Type"] = "application/json";
        headers["Content-Length"] = String(Buffer.byteLength(text));
        res.writeHead(200, headers);
        res.end(text);
        if (services.log.debugEnabled) {
          services.log.debug("publish", { requestId, path: loggablePath(req.url ?? ""), status: 200, ms: Math.round(performance.now() - started) });
        }
      })
      .catch((err: unknown) => sendError(services, req, res, headers, err, "publish refused"));
    return true;
  };
}

async function publish(services: Services, req: IncomingMessage, plate: string, channel: string): Promise<string> {
  const started = performance.now();
  const { tenancy, config } = services;
  const topic = { plateId: plateParam(plate), pattern: false, channel: channelParam(channel) } as const;
  const key = await tenancy.authenticate(topic.plateId, req.headers.authorization);
  tenancy.authorize(key, "publish", topic);
  requireJsonType(req.headers["content-type"]);
  const body = messageBody(await readBody(req, config.maxMessageBytes));
  const idempotencyKey = idempotencyKeyHeader(req.headers["idempotency-key"]);
  // Idempotency keys belong to the API key that sends them: another key's use of one neither
  // blocks this publish nor tells this key what that publish was.
  const idempotency = idempotencyKey === undefined ? undefined : { key: idempotencyKey, owner: key.id };
  const { message, repeated } = await services.publisher.publish(topic.plateId, topic.channel, body, idempotency);
  if (repeated && message.channel !== topic.channel) {
    // No channel named: a key limited to some channels must not learn others' names here.
    throw new PlateError("conflict", "This Idempotency-Key was already used for a publish to another channel; use a new key.");
  }
  services.metrics.publishSeconds.observe((performance.now() - started) / 1000);
  return '{"data":{"id":"' + message.id + '","channel":"' + message.channel + '","timestamp":"' + message.timestamp + '"}}';
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
 * The JSON text of the published value: the body must be an object with a `message` member
 * (`null` counts when written). The value is re-serialized once here, so every subscriber gets
 * the same compact text.
 */
function messageBody(text: string): string {
  const parsed = parseJson(text, 'send {"message": <any JSON value>}.');
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed) || !Object.hasOwn(parsed, "message")) {
    throw new PlateError("missing_message", 'The body needs a "message" member: {"message": <any JSON value>}.');
  }
  return JSON.stringify((parsed as { message: unknown }).message);
}
