import { describe, expect, it } from "vitest";
import { ERROR_CODES, PlateError, isErrorCode, toPlateError, type ErrorCode } from "./errors.js";

/** Each code the spec names, with the HTTP status it gives it (API.md, routes 1, 4, 5 and admin). */
const SPEC_STATUS: Record<string, number> = {
  invalid_json: 400,
  missing_message: 400,
  invalid_channel: 400,
  invalid_plate: 400,
  invalid_parameter: 400,
  missing_api_key: 401,
  invalid_api_key: 401,
  forbidden: 403,
  not_found: 404,
  invalid_client_socket: 404,
  conflict: 409,
  expired_client_socket: 410,
  exhausted_client_socket: 410,
  payload_too_large: 413,
  unsupported_media_type: 415,
  rate_limited: 429,
  broker_unavailable: 503,
};

/** Each code the spec places on a WebSocket, with its close code (API.md, "WebSocket close codes"). */
const SPEC_CLOSE: Record<string, number> = {
  bad_request: 4400,
  unauthorized: 4401,
  missing_api_key: 4401,
  invalid_api_key: 4401,
  forbidden: 4403,
  invalid_client_socket: 4404,
  expired_client_socket: 4410,
  exhausted_client_socket: 4429,
  slow_consumer: 4408,
  revoked: 4409,
  max_duration_reached: 4000,
  payload_too_large: 1009,
  shutting_down: 1001,
};

describe("ERROR_CODES", () => {
  it.each(Object.entries(SPEC_STATUS))("answers %s with HTTP %i", (code, status) => {
    expect(isErrorCode(code)).toBe(true);
    expect(ERROR_CODES[code as ErrorCode].status).toBe(status);
  });

  it.each(Object.entries(SPEC_CLOSE))("closes a socket for %s with %i", (code, close) => {
    expect(isErrorCode(code)).toBe(true);
    expect(ERROR_CODES[code as ErrorCode].close).toBe(close);
  });

  it("has internal_error as a 500", () => {
    expect(ERROR_CODES.internal_error.status).toBe(500);
  });

  it("gives every code an HTTP status and a valid WebSocket close code", () => {
    for (const [code, entry] of Object.entries(ERROR_CODES)) {
      const status: number = entry.status;
      const close: number = entry.close;
      expect(Number.isInteger(status), code).toBe(true);
      expect(status >= 200 && status < 600, code).toBe(true);
      // 1000-1015 are the protocol's codes (1005/1006/1015 may never be sent); 4000-4999 are ours.
      const sendable =
        (close >= 1000 && close <= 1014 && close !== 1005 && close !== 1006) || (close >= 4000 && close <= 4999);
      expect(sendable, `${code} closes with ${close}`).toBe(true);
    }
  });

  it("tells error codes from other strings", () => {
    expect(isErrorCode("invalid_api_key")).toBe(true);
    expect(isErrorCode("nope")).toBe(false);
    expect(isErrorCode("")).toBe(false);
    expect(isErrorCode("toString")).toBe(false);
    expect(isErrorCode("__proto__")).toBe(false);
    expect(isErrorCode("constructor")).toBe(false);
  });
});

describe("PlateError", () => {
  it("carries its code, message, HTTP status and close code", () => {
    const err = new PlateError("exhausted_client_socket", "This link has been used up.");
    expect(err).toBeInstanceOf(Error);
    expect(err.name).toBe("PlateError");
    expect(err.code).toBe("exhausted_client_socket");
    expect(err.message).toBe("This link has been used up.");
    expect(err.status).toBe(410);
    expect(err.closeCode).toBe(4429);
  });

  it.each(Object.keys(ERROR_CODES) as ErrorCode[])("maps %s to the table's status and close code", (code) => {
    const err = new PlateError(code, "x");
    expect(err.status).toBe(ERROR_CODES[code].status);
    expect(err.closeCode).toBe(ERROR_CODES[code].close);
  });

  it("serializes to the spec's error body and nothing else", () => {
    const err = new PlateError("invalid_api_key", "Check the key.", { cause: new Error("secret detail") });
    expect(err.toBody()).toEqual({ error: { code: "invalid_api_key", message: "Check the key." } });
    expect(JSON.parse(JSON.stringify(err.toBody()))).toEqual({
      error: { code: "invalid_api_key", message: "Check the key." },
    });
  });

  it("keeps Retry-After seconds when given, none otherwise", () => {
    expect(new PlateError("rate_limited", "Slow down.", { retryAfterS: 3 }).retryAfterS).toBe(3);
    expect(new PlateError("broker_unavailable", "Try again.", { retryAfterS: 1 }).retryAfterS).toBe(1);
    expect(new PlateError("rate_limited", "Slow down.").retryAfterS).toBeUndefined();
  });

  it("keeps its cause for the log", () => {
    const cause = new Error("ECONNREFUSED");
    expect(new PlateError("broker_unavailable", "Try again.", { cause }).cause).toBe(cause);
    expect(new PlateError("broker_unavailable", "Try again.").cause).toBeUndefined();
  });
});

describe("toPlateError", () => {
  it("passes a PlateError through unchanged", () => {
    const err = new PlateError("forbidden", "No.");
    expect(toPlateError(err)).toBe(err);
  });

  it.each([
    ["an Error", new Error("database password is hunter2")],
    ["a TypeError", new TypeError("x is undefined")],
    ["a string", "boom"],
    ["undefined", undefined],
    ["null", null],
    ["an object", { code: "forbidden", message: "looks like ours" }],
  ])("turns %s into internal_error without leaking its detail", (_label, thrown) => {
    const err = toPlateError(thrown);
    expect(err).toBeInstanceOf(PlateError);
    expect(err.code).toBe("internal_error");
    expect(err.status).toBe(500);
    expect(err.closeCode).toBe(1011);
    expect(err.cause).toBe(thrown);
    expect(JSON.stringify(err.toBody())).not.toContain("hunter2");
    expect(err.toBody().error.code).toBe("internal_error");
  });
});
