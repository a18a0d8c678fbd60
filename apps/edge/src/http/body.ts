import { PlateError } from "@plate/protocol";
import { parseJson } from "./json.js";

/**
 * Reads a request body as UTF-8 text, refusing (413 `payload_too_large`) as soon as it passes
 * `maxBytes`: a declared `Content-Length` over the limit is refused before reading, and a body
 * without one is counted as it streams, so an oversized body is never held whole.
 */
export async function readBody(request: Request, maxBytes: number): Promise<string> {
  const declared = Number(request.headers.get("content-length") ?? "0");
  if (declared > maxBytes) throw tooLarge(maxBytes);
  if (request.body === null) return "";
  const chunks: Uint8Array[] = [];
  let size = 0;
  const reader: ReadableStreamDefaultReader<Uint8Array> = request.body.getReader();
  for (;;) {
    const { done, value } = await reader.read().catch((err: unknown) => {
      throw cutOff(err);
    });
    if (done) break;
    size += value.byteLength;
    if (size > maxBytes) {
      await reader.cancel();
      throw tooLarge(maxBytes);
    }
    chunks.push(value);
  }
  return Buffer.concat(chunks, size).toString("utf8");
}

/**
 * Reads a JSON body; `invalid_json` when it does not parse or nests deeper than `MAX_JSON_DEPTH`.
 * Empty bodies are `undefined`.
 */
export async function readJson(request: Request, maxBytes: number): Promise<unknown> {
  requireJson(request);
  const text = await readBody(request, maxBytes);
  if (text.trim() === "") return undefined;
  return parseJson(text, "send a JSON object of parameters.");
}

/** Refuses (415) a body that is not declared `application/json`. */
export function requireJson(request: Request): void {
  requireJsonType(request.headers.get("content-type") ?? undefined);
}

/** Refuses (415) a `Content-Type` that is not `application/json` (parameters such as charset allowed). */
export function requireJsonType(contentType: string | undefined): void {
  const mime = (contentType ?? "").split(";")[0]?.trim().toLowerCase();
  if (mime !== "application/json") {
    throw new PlateError("unsupported_media_type", 'Send the body as JSON with "Content-Type: application/json".');
  }
}

/**
 * The refusal of a body that stopped before its end: the client went away or was cut by
 * `HTTP_REQUEST_TIMEOUT_MS`. Its fault, not the node's (no `internal_error`); nobody reads the answer.
 */
export function cutOff(cause: unknown): PlateError {
  return new PlateError("bad_request", "The request body ended before it was complete.", { cause });
}

/** The refusal of a body over `maxBytes`. */
export function tooLarge(maxBytes: number): PlateError {
  return new PlateError("payload_too_large", `The body is over ${maxBytes} bytes, this node's limit.`);
}

/**
 * A JSON object of parameters (route 4's POST, the admin routes). No body at all means no
 * parameters; a body that is not a JSON object is `invalid_json`.
 */
export async function readParams(request: Request, maxBytes: number): Promise<Record<string, unknown>> {
  if (!request.headers.has("content-type")) {
    if ((await readBody(request, maxBytes)).trim() === "") return {};
    requireJson(request);
  }
  const value = await readJson(request, maxBytes);
  if (value === undefined) return {};
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new PlateError("invalid_json", "The body must be a JSON object.");
  }
  return value as Record<string, unknown>;
}
