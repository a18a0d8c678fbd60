import { readFile } from "node:fs/promises";
import { describe, expect, it } from "vitest";
import { ConfigError, SETTINGS, loadConfig, redisTarget } from "./config.js";

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
    ["SUBSCRIBER_DIRECT_SEND", "maybe"],
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

describe("the Redis a node shares", () => {
  it("is none without REDIS_URL, cluster or sentinels: the embedded broker and store", () => {
    expect(redisTarget(loadConfig({}))).toBeUndefined();
  });

  it("is one Redis with REDIS_URL alone", () => {
    expect(redisTarget(loadConfig({ REDIS_URL: "redis://r:6379" }))).toEqual({ kind: "standalone", url: "redis://r:6379" });
  });

  it("is a cluster with REDIS_CLUSTER_NODES, REDIS_URL giving only credentials", () => {
    expect(redisTarget(loadConfig({ REDIS_CLUSTER_NODES: "a:7000, b:7001,[::1]:7002", REDIS_URL: "redis://u:p@x" }))).toEqual({
      kind: "cluster",
      nodes: [
        { host: "a", port: 7000 },
        { host: "b", port: 7001 },
        { host: "::1", port: 7002 },
      ],
      url: "redis://u:p@x",
    });
  });

  it("is a primary found through Sentinel with REDIS_SENTINELS, under REDIS_SENTINEL_MASTER", () => {
    expect(redisTarget(loadConfig({ REDIS_SENTINELS: "s1:26379,s2:26379" }))).toEqual({
      kind: "sentinel",
      sentinels: [
        { host: "s1", port: 26379 },
        { host: "s2", port: 26379 },
      ],
      masterName: "mymaster",
    });
    expect(redisTarget(loadConfig({ REDIS_SENTINELS: "s1:26379", REDIS_SENTINEL_MASTER: "plate" }))).toMatchObject({ masterName: "plate" });
  });

  it("refuses a seed list that is not host:port, both a cluster and sentinels, and a key prefix with a brace", () => {
    for (const bad of ["a", "a:", ":7000", "a:0", "a:70000", "a:x", ","]) {
      expect(configError({ REDIS_CLUSTER_NODES: bad }).variable).toBe("REDIS_CLUSTER_NODES");
      expect(configError({ REDIS_SENTINELS: bad }).variable).toBe("REDIS_SENTINELS");
    }
    expect(configError({ REDIS_CLUSTER_NODES: "a:1", REDIS_SENTINELS: "b:2" }).variable).toBe("REDIS_SENTINELS");
    expect(configError({ REDIS_KEY_PREFIX: "pl{ate}:" }).variable).toBe("REDIS_KEY_PREFIX");
  });
});

describe("the README", () => {
  it("documents every setting the node reads", async () => {
    const text = await readFile(README, "utf8");
    const missing = Object.keys(SETTINGS).filter((variable) => !new RegExp(`\\b${variable}\\b`).test(text));
    expect(missing).toEqual([]);
  });
});
