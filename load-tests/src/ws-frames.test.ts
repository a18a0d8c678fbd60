import { describe, expect, it } from "vitest";
import { FrameCounter, FrameReader, frameEnd, maskedTextFrame } from "./ws-frames.js";

/** Unmasks a client frame written by `maskedTextFrame` (a small one: 7-bit length). */
function unmask(frame: Buffer): string {
  const mask = frame.subarray(2, 6);
  const payload = Buffer.from(frame.subarray(6));
  for (let i = 0; i < payload.length; i++) payload[i]! ^= mask[i & 3]!;
  return payload.toString("utf8");
}

function read(chunks: Buffer[]): [number, string][] {
  const frames: [number, string][] = [];
  const reader = new FrameReader((opcode, payload) => frames.push([opcode, payload.toString("latin1")]));
  for (const chunk of chunks) reader.feed(chunk);
  return frames;
}

describe("maskedTextFrame", () => {
  it("writes RFC 6455's own example of a masked text frame (§5.7)", () => {
    const frame = maskedTextFrame("Hello", Uint8Array.of(0x37, 0xfa, 0x21, 0x3d));
    expect([...frame]).toEqual([0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58]);
  });

  it("masks each frame with a fresh key that unmasks to the text", () => {
    const text = '{"type":"publish","ref":1,"channel":"c","message":{"s":0}}';
    const a = maskedTextFrame(text);
    const b = maskedTextFrame(text);
    expect(unmask(a)).toBe(text);
    expect(unmask(b)).toBe(text);
    expect(a.subarray(2, 6)).not.toEqual(b.subarray(2, 6));
  });

  it("writes the 16-bit and 64-bit lengths of longer frames", () => {
    const mask = Uint8Array.of(0, 0, 0, 0);
    expect([...maskedTextFrame("x".repeat(256), mask).subarray(0, 4)]).toEqual([0x81, 0x80 | 126, 0x01, 0x00]);
    expect([...maskedTextFrame("x".repeat(65_536), mask).subarray(0, 10)]).toEqual([
      0x81,
      0x80 | 127,
      0,
      0,
      0,
      0,
      0,
      1,
      0,
      0,
    ]);
  });
});

describe("FrameReader", () => {
  const hello = Buffer.from([0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]); // RFC 6455 §5.7
  const long = Buffer.concat([Buffer.from([0x81, 126, 0x01, 0x00]), Buffer.alloc(256, "y")]);
  const close = Buffer.from([0x88, 0x02, 0x11, 0x30]); // 4400
  const stream = Buffer.concat([hello, long, close]);

  it("reads the server's frames, short and 16-bit long", () => {
    expect(read([stream])).toEqual([
      [1, "Hello"],
      [1, "y".repeat(256)],
      [8, "\x11\x30"],
    ]);
  });

  it("reads the same frames whatever the read boundaries", () => {
    for (let cut = 1; cut < stream.length; cut++) {
      expect(read([stream.subarray(0, cut), stream.subarray(cut)])).toEqual(read([stream]));
    }
  });

  it("refuses a masked frame from the server", () => {
    expect(() => read([Buffer.from([0x81, 0x81, 1, 2, 3, 4, 0x41])])).toThrow(/masked/);
  });
});

describe("FrameCounter", () => {
  const short = Buffer.from([0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]);
  const long = Buffer.concat([Buffer.from([0x81, 126, 0x01, 0x00]), Buffer.alloc(256, "y")]);
  const binary = Buffer.from([0x82, 0x01, 0x00]);
  const close = Buffer.from([0x88, 0x02, 0x11, 0x30]);
  const stream = Buffer.concat([short, long, binary, long, short, close]);

  it("counts text frames and sees the close, whatever the read boundaries", () => {
    for (let cut = 0; cut <= stream.length; cut++) {
      for (const step of [1, 3, 7]) {
        const counter = new FrameCounter();
        counter.feed(stream.subarray(0, cut));
        for (let at = cut; at < stream.length; at += step) counter.feed(stream.subarray(at, at + step));
        expect([counter.text, counter.closed]).toEqual([4, true]);
      }
    }
  });
});

describe("frameEnd", () => {
  it("answers the end of a whole frame, and -1 for one not all there", () => {
    const long = Buffer.concat([Buffer.from([0x81, 126, 0x01, 0x00]), Buffer.alloc(256, "y"), Buffer.from([0x81])]);
    expect(frameEnd(long, 0)).toBe(260);
    expect(frameEnd(long.subarray(0, 259), 0)).toBe(-1);
    expect(frameEnd(long, 260)).toBe(-1);
    expect(frameEnd(maskedTextFrame("Hello"), 0)).toBe(11);
  });
});
