import { describe, expect, it } from "vitest";
import { readJsonObject } from "./json.js";

describe("readJsonObject", () => {
  it("answers an object's members, and undefined for anything that is not a JSON object", () => {
    expect(readJsonObject('{"a":1,"b":[2]}')).toEqual({ a: 1, b: [2] });
    for (const text of ["", "nope", "null", "[]", "[1]", '"x"', "3", "true", '{"a":'])
      expect(readJsonObject(text)).toBeUndefined();
  });
});
