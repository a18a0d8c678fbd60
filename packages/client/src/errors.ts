/**
 * The spec's error codes, as the server sends them in `{"error":{"code","message"}}` bodies and
 * frames, and as WebSocket close codes. The client keeps its own copy so that it has no runtime
 * dependency (a test checks it against the server's table).
 */
export type ErrorCode =
  | "bad_request"
  | "invalid_json"
  | "missing_message"
  | "invalid_channel"
  | "invalid_plate"
  | "invalid_parameter"
  | "invalid_filter"
  | "missing_api_key"
  | "invalid_api_key"
  | "unauthorized"
  | "invalid_token"
  | "token_expired"
  | "forbidden"
  | "quota_exceeded"
  | "not_found"
  | "invalid_client_socket"
  | "conflict"
  | "expired_client_socket"
  | "exhausted_client_socket"
  | "payload_too_large"
  | "unsupported_media_type"
  | "rate_limited"
  | "internal_error"
  | "broker_unavailable"
  | "shutting_down"
  | "max_duration_reached"
  | "slow_consumer"
  | "revoked";

/**
 * Codes the client gives to failures that never reached the service's error table: the network
 * (refused, reset, timed out), an answer that is not Plate's (a proxy's HTML page, say), a
 * `tokenProvider` that threw or answered no token, and a request the connection's `close()` (or
 * final error, or a subscription's `unsubscribe()` for its presence `track`) left unanswered.
 */
export type ClientErrorCode = "network_error" | "unexpected_response" | "token_unavailable" | "connection_closed";

/**
 * The codes a subscription reconnects after (with backoff): the service or the path to it is
 * briefly unable, or the service ended the connection on purpose and a new one will do.
 * Every other code is final: retrying the same request cannot succeed.
 */
const RETRYABLE: ReadonlySet<ErrorCode | ClientErrorCode> = new Set<ErrorCode | ClientErrorCode>([
  "network_error",
  "unexpected_response",
  "token_unavailable",
  "internal_error",
  "broker_unavailable",
  "rate_limited",
  "shutting_down",
  "slow_consumer",
  "max_duration_reached",
]);

/**
 * WebSocket close codes of the spec, to the error code they stand for (a browser sees the close
 * code even when no error frame arrived). 1000 (normal) and 1005/1006 (no code, abnormal) are not
 * errors of the service and are not listed.
 */
const CLOSE_CODES: Readonly<Record<number, ErrorCode>> = {
  1001: "shutting_down",
  1009: "payload_too_large",
  1011: "internal_error",
  1013: "broker_unavailable",
  4000: "max_duration_reached",
  4400: "bad_request",
  4401: "unauthorized",
  4403: "forbidden",
  4404: "invalid_client_socket",
  4408: "slow_consumer",
  4409: "revoked",
  4410: "expired_client_socket",
  4429: "exhausted_client_socket",
};

/** The one error type of the client: every failure has a code. */
export class PlateClientError extends Error {
  override readonly name = "PlateClientError";

  constructor(
    /** The spec's code, or a client-side one (`network_error`, `unexpected_response`). */
    readonly code: ErrorCode | ClientErrorCode,
    message: string,
    readonly details: {
      /** The HTTP status, when the error came as an HTTP answer. */
      readonly status?: number;
      /** The WebSocket close code, when the error closed a socket. */
      readonly closeCode?: number;
      /** When to try again (the answer's `Retry-After`), in milliseconds. */
      readonly retryAfterMs?: number;
      /**
       * Whether the client tries again, when that differs from the code's rule (`RETRYABLE`): a
       * connection with a `tokenProvider` reconnects after `token_expired`, for one.
       */
      readonly retryable?: boolean;
      readonly cause?: unknown;
    } = {},
  ) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
  }

  /** Whether trying again later can succeed (see `RETRYABLE`), or whether the client does (`details.retryable`). */
  get retryable(): boolean {
    return this.details.retryable ?? RETRYABLE.has(this.code);
  }
}

/** The error an HTTP answer that is not 2xx stands for, read from its `{"error":...}` body. */
export async function errorFromResponse(res: Response): Promise<PlateClientError> {
  const retryAfter = Number(res.headers.get("retry-after"));
  const details = {
    status: res.status,
    ...(Number.isFinite(retryAfter) && retryAfter > 0 ? { retryAfterMs: retryAfter * 1000 } : {}),
  };
  let text = "";
  try {
    text = await res.text();
    const body = JSON.parse(text) as { error?: { code?: unknown; message?: unknown } };
    if (typeof body.error?.code === "string") {
      const message = typeof body.error.message === "string" ? body.error.message : body.error.code;
      return new PlateClientError(body.error.code as ErrorCode, message, details);
    }
  } catch {
    // Not Plate's JSON: reported below as it is.
  }
  return new PlateClientError("unexpected_response", `HTTP ${res.status}: ${text.slice(0, 200)}`, details);
}

/** The error a WebSocket close code stands for; `undefined` for a normal close. */
export function errorFromClose(code: number, reason: string): PlateClientError | undefined {
  if (code === 1000) return undefined;
  const known = CLOSE_CODES[code];
  if (known !== undefined) return new PlateClientError(known, reason || known, { closeCode: code });
  return new PlateClientError("network_error", `The connection closed (${code}${reason ? ` ${reason}` : ""}).`, { closeCode: code });
}
