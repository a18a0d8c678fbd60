export { startEdge } from "./node.js";
export type { EdgeNode, EdgeParts } from "./node.js";
export { loadConfig, ConfigError, SETTINGS } from "./config.js";
export type { Config, SettingName } from "./config.js";
