/**
 * The closed set of error codes. Each code has one HTTP status (for answers before a stream starts)
 * and one WebSocket close code (for a socket the code ends). Close codes 4xxx come from the spec's
 * table; codes the spec does not place on a socket use the standard ones (1008 policy, 1011 server
 * error, 1013 try again later). Tests assert these codes, never message text.
 */
export const ERROR_CODES = {
  bad_request: { status: 400, close: 4400 },
  invalid_json: { status: 400, close: 4400 },
  missing_message: { status: 400, close: 4400 },
  invalid_channel: { status: 400, close: 4400 },
  invalid_plate: { status: 400, close: 4400 },
  invalid_parameter: { status: 400, close: 4400 },
  invalid_filter: { status: 400, close: 4400 },
  missing_api_key: { status: 401, close: 4401 },
  invalid_api_key: { status: 401, close: 4401 },
  unauthorized: { status: 401, close: 4401 },
  invalid_token: { status: 401, close: 4401 },
  token_expired: { status: 401, close: 4401 },
  forbidden: { status: 403, close: 4403 },
  quota_exceeded: { status: 403, close: 4403 },
  not_found: { status: 404, close: 4404 },
  invalid_client_socket: { status: 404, close: 4404 },
  conflict: { status: 409, close: 4400 },
  expired_client_socket: { status: 410, close: 4410 },
  exhausted_client_socket: { status: 410, close: 4429 },
  payload_too_large: { status: 413, close: 1009 },
  unsupported_media_type: { status: 415, close: 4400 },
  rate_limited: { status: 429, close: 1013 },
  internal_error: { status: 500, close: 1011 },
  broker_unavailable: { status: 503, close: 1013 },
  shutting_down: { status: 503, close: 1001 },
  max_duration_reached: { status: 200, close: 4000 },
  slow_consumer: { status: 200, close: 4408 },
  revoked: { status: 401, close: 4409 },
} as const satisfies Record<string, { status: number; close: number }>;

/** One of the spec's error codes. */
export type ErrorCode = keyof typeof ERROR_CODES;

/**
 * The body of every error answer: `{"error":{"code","message"}}`, plus `"index"` when the error is
 * about one item of a batch (route 12's `POST /{plateId}/publish`).
 */
export interface ErrorBody {
  readonly error: { readonly code: ErrorCode; readonly message: string; readonly index?: number };
}

/** Whether `value` names an error code of the table. */
export function isErrorCode(value: string): value is ErrorCode {
  return Object.hasOwn(ERROR_CODES, value);
}

/** The one error type of Plate: it cannot be made without a code. */
export class PlateError extends Error {
  override readonly name = "PlateError";
  /** Seconds after which a retry may succeed; sent as `Retry-After` with 429 and 503. */
  readonly retryAfterS: number | undefined;
  /** The item of a batch the error is about (its position, from 0). */
  readonly index: number | undefined;

  constructor(
    readonly code: ErrorCode,
    message: string,
    options: { retryAfterS?: number; cause?: unknown; index?: number } = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.retryAfterS = options.retryAfterS;
    this.index = options.index;
  }

  /** The HTTP status for this error. */
  get status(): number {
    return ERROR_CODES[this.code].status;
  }

  /** The WebSocket close code for this error. */
  get closeCode(): number {
    return ERROR_CODES[this.code].close;
  }

  /** The JSON body of an HTTP error answer. */
  toBody(): ErrorBody {
    return { error: { code: this.code, message: this.message, ...(this.index === undefined ? {} : { index: this.index }) } };
  }
}

/**
 * The one boundary for the unexpected: a `PlateError` passes through, anything else becomes
 * `internal_error` (its detail is for the log, never for the client).
 */
export function toPlateError(err: unknown): PlateError {
  if (err instanceof PlateError) return err;
  return new PlateError("internal_error", "Something went wrong on our side; try again.", {
    cause: err,
  });
}
