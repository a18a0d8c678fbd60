import { describe, expect, it } from "vitest";
import { SseParser } from "./sse.js";

function parse(...chunks: string[]): [string, string][] {
  const events: [string, string][] = [];
  const parser = new SseParser((event, data) => events.push([event, data]));
  for (const chunk of chunks) parser.push(chunk);
  return events;
}

describe("reading an event stream", () => {
  it("reads events whose lines end with LF, CRLF or CR (proxies rewrite line ends)", () => {
    const expected = [
      ["ready", '{"type":"ready"}'],
      ["message", '{"n":1}'],
    ];
    expect(parse('retry: 2000\n\nevent: ready\ndata: {"type":"ready"}\n\nid: 1\ndata: {"n":1}\n\n')).toEqual(expected);
    expect(parse('retry: 2000\r\n\r\nevent: ready\r\ndata: {"type":"ready"}\r\n\r\nid: 1\r\ndata: {"n":1}\r\n\r\n')).toEqual(expected);
    expect(parse('retry: 2000\r\revent: ready\rdata: {"type":"ready"}\r\rid: 1\rdata: {"n":1}\r\r')).toEqual(expected);
  });

  it("reads an event cut anywhere between chunks, a CRLF cut in two included", () => {
    const text = 'event: reset\r\ndata: {"reason":"gap"}\r\n\r\nid: 7\r\ndata: {"n":7}\r\n\r\n';
    for (let cut = 1; cut < text.length; cut++) {
      expect(parse(text.slice(0, cut), text.slice(cut)), `cut at ${cut}`).toEqual([
        ["reset", '{"reason":"gap"}'],
        ["message", '{"n":7}'],
      ]);
    }
  });

  it("skips comments (heartbeats), joins data lines with LF, and drops an event the stream cut off", () => {
    expect(parse(": ping\n\ndata: a\ndata: b\n\n: ping\ndata:no space\n\ndata: never ended\n")).toEqual([
      ["message", "a\nb"],
      ["message", "no space"],
    ]);
  });
});
