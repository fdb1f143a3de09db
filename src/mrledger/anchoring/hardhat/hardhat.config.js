// Hardhat Network as mrledger's second EVM client (docs/anchoring.md, "EVM clients"): the anchoring tests and
// one end-to-end serve test run against it as well as anvil, so nothing depends on one client's quirks.
// Started by mrledger.anchoring.hardhat_node.HardhatNode (`hardhat --config <this file> node`), never as a
// project: no sources, no compilation, no plugins. Every value that a test relies on is spelled out here
// rather than left to Hardhat's defaults, which change between releases.
module.exports = {
  networks: {
    hardhat: {
      chainId: 31337, // the id anvil uses too: "a local dev chain" to mrledger (confirmations default to 1)
      hardfork: "cancun", // the registry is compiled for cancun (MrLedgerRegistry.json, evmVersion)
      accounts: {
        // The well-known test mnemonic, also anvil's: the same ten funded dev accounts on both clients.
        mnemonic: "test test test test test test test test test test test junk",
        path: "m/44'/60'/0'/0",
        count: 10,
        accountsBalance: "10000000000000000000000", // 10,000 ETH each, as anvil
      },
      mining: { auto: true, interval: 0 }, // a block per transaction, as anvil without --block-time
      initialBaseFeePerGas: 1000000000,
      loggingEnabled: false, // `hardhat node` logs every call by default: costly, and the tests do not read it
    },
  },
};
