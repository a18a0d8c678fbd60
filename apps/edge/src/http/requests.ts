import type { IncomingMessage, ServerResponse } from "node:http";
import { RequestError, getRequestListener } from "@hono/node-server";
import { PlateError } from "@plate/protocol";
import { requestIdOf } from "../core/request-id.js";
import type { Services } from "../services.js";
import { createApp } from "./app.js";
import { createPublishHandler } from "./publish.js";
import { NO_SNIFF, answerHeaders, sendError } from "./raw-response.js";
import { errorAnswer, refuse } from "./refusals.js";
import { requestUrl, requireHost } from "./target.js";

/**
 * Node's request listener: publish on Node's own objects (publish.ts), everything else through
 * Hono (app.ts). A target that is not a URL is refused here with the spec's error body (Hono's
 * adapter would answer a bare 400), as the WebSocket upgrade refuses it (`requestUrl`), and so is
 * a `Host` that is not a host (`requireHost`). Whatever else the adapter cannot turn into a fetch
 * `Request` is refused the same way by its `errorHandler`. Nothing a request carries throws out of this listener.
 */
export function createRequestListener(services: Services): (req: IncomingMessage, res: ServerResponse) => void {
  const publish = createPublishHandler(services);
  const hono = getRequestListener(createApp(services).fetch, { errorHandler: (err) => adapterRefusal(services, err) });
  return (req, res) => {
    try {
      if (publish(req, res)) return;
      requestUrl(req.url);
      requireHost(req.headers.host);
    } catch (err) {
      sendError(
        services,
        req,
        res,
        answerHeaders(services, req.headers.origin, requestIdOf(req.headers["x-request-id"])),
        err,
        "request refused",
      );
      return;
    }
    hono(req, res).catch((err: unknown) => {
      services.log.error("request failed", { error: String(err) });
      res.destroy();
    });
  };
}

/**
 * The answer to a request Hono's adapter could not build (a `RequestError`: its `Host` or target
 * does not make a URL), or to a `fetch` that threw instead of answering (`internal_error`).
 */
function adapterRefusal(services: Services, err: unknown): Response {
  const error = refuse(
    services,
    err instanceof RequestError ? new PlateError("bad_request", "The request's Host header and target do not make a URL.") : err,
    { what: "request refused" },
  );
  const answer = errorAnswer(error);
  return new Response(answer.body, { status: answer.status, headers: { ...answer.headers, ...NO_SNIFF } });
}
