// The SSE client lives in @plate/testing, shared with infra/local's test.
export { SseClient } from "@plate/testing";
export type { SseEvent } from "@plate/testing";
