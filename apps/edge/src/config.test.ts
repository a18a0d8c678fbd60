import { readFile } from "node:fs/promises";
import { describe, expect, it } from "vitest";
import { ConfigError, SETTINGS, loadConfig } from "./config.js";

/** The repository's README, which documents every setting. */
const README = new URL("../../../README.md", import.meta.url);

/** Runs `loadConfig` and answers the ConfigError it throws (fails the test when it throws nothing else). */
function configError(env: Record<string, string>): ConfigError {
  try {
    loadConfig(env);
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return err as ConfigError;
  }
  throw new Error(`loadConfig accepted ${JSON.stringify(env)}`);
}

describe("loadConfig", () => {
  it("gives every setting its documented default when nothing is set", () => {
    const config = loadConfig({});
    expect(config).toMatchObject({
      port: 8080,
      maxMessageBytes: 65536,
      heartbeatMs: 25000,
      wsAuthTimeoutMs: 10000,
      slowConsumerMaxBytes: 1048576,
      corsOrigins: "*",
      redisUrl: undefined,
      dataDir: "./data",
    });
    expect(config.adminToken).toBeUndefined();
    expect(config.bootstrapPlates.size).toBe(0);
  });

  it("treats an empty variable as unset", () => {
    const config = loadConfig({ PORT: "", REDIS_URL: "", ADMIN_TOKEN: "", HEARTBEAT_MS: "" });
    expect(config.port).toBe(8080);
    expect(config.redisUrl).toBeUndefined();
    expect(config.adminToken).toBeUndefined();
    expect(config.heartbeatMs).toBe(25000);
  });

  it("reads the values it is given", () => {
    const config = loadConfig({
      PORT: "0",
      HOST: "127.0.0.1",
      REDIS_URL: "redis://localhost:6379",
      DATA_DIR: "/var/lib/plate",
      MAX_MESSAGE_BYTES: "1024",
      HEARTBEAT_MS: "500",
      CORS_ORIGINS: "https://a.example, https://b.example:8443",
      BOOTSTRAP_PLATES: JSON.stringify({ shop: "shop-secret-0123456789abcdef" }),
      DEMO_PLATE: "false",
      LOG_LEVEL: "warn",
    });
    expect(config).toMatchObject({
      port: 0,
      host: "127.0.0.1",
      redisUrl: "redis://localhost:6379",
      dataDir: "/var/lib/plate",
      maxMessageBytes: 1024,
      heartbeatMs: 500,
      corsOrigins: ["https://a.example", "https://b.example:8443"],
      demoPlate: false,
      logLevel: "warn",
    });
    expect([...config.bootstrapPlates]).toEqual([["shop", "shop-secret-0123456789abcdef"]]);
  });

  it("accepts a bootstrap secret of exactly 24 characters", () => {
    const secret = "x".repeat(24);
    expect([...loadConfig({ BOOTSTRAP_PLATES: JSON.stringify({ shop: secret }) }).bootstrapPlates]).toEqual([
      ["shop", secret],
    ]);
  });

  it.each([
    ["PORT", "abc"],
    ["PORT", "70000"],
    ["PORT", "-1"],
    ["PORT", "80.5"],
    ["HEARTBEAT_MS", "-1"],
    ["MAX_MESSAGE_BYTES", "lots"],
    ["WS_AUTH_TIMEOUT_MS", "10s"],
    ["CORS_ORIGINS", "not-a-url"],
    ["CORS_ORIGINS", "https://app.example.com/path"],
    ["BOOTSTRAP_PLATES", "notjson"],
    ["BOOTSTRAP_PLATES", "[]"],
    ["BOOTSTRAP_PLATES", JSON.stringify({ shop: "x".repeat(23) })],
    ["BOOTSTRAP_PLATES", JSON.stringify({ shop: 12345 })],
    ["BOOTSTRAP_PLATES", JSON.stringify({ "bad plate": "x".repeat(32) })],
    ["DEMO_PLATE", "maybe"],
    ["LOG_LEVEL", "loud"],
  ])("refuses %s=%s with a ConfigError naming the variable", (variable, value) => {
    const error = configError({ [variable]: value });
    expect(error.variable).toBe(variable);
    expect(error.message).toContain(variable);
  });

  it("names the bad variable even when other settings are fine", () => {
    const error = configError({ PORT: "8081", HOST: "127.0.0.1", LOG_LEVEL: "loud" });
    expect(error.variable).toBe("LOG_LEVEL");
  });
});

describe("the README", () => {
  it("documents every setting the node reads", async () => {
    const text = await readFile(README, "utf8");
    const missing = Object.keys(SETTINGS).filter((variable) => !new RegExp(`\\b${variable}\\b`).test(text));
    expect(missing).toEqual([]);
  });
});
