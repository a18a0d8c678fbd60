import { MemoryBroker } from "./memory-broker.js";
import { runBrokerContract } from "./broker.contract.js";

runBrokerContract("memory", () => {
  // One process is one node: every "node" of the fixture is the same embedded broker.
  const broker = new MemoryBroker();
  return Promise.resolve({
    node: () => Promise.resolve(broker),
    close: () => broker.close(),
  });
});
