// Sends COUNT events to a Splunk HTTP Event Collector with Splunk's own Node.js logger
// (splunk-logging), as an application using it would: events queued, then flushed in batches
// of 25 (one request each). Exits non-zero when a request fails or is refused.
// Usage: node hec.js URL TOKEN COUNT
"use strict";
const { Logger } = require("splunk-logging");

const [url, token, count] = process.argv.slice(2);
// maxBatchCount 0: nothing is sent until flush().
const logger = new Logger({ url, token, maxBatchCount: 0, maxRetries: 0 });
let failed = false;
logger.error = (error) => {
  failed = true;
  console.error("hec send failed:", error && error.message ? error.message : error);
};

const flush = () =>
  new Promise((resolve) =>
    logger.flush((error, response, body) => {
      if (error || !response || response.statusCode !== 200) {
        failed = true;
        console.error(
          "hec answered:",
          error ? error.message : `${response && response.statusCode} ${JSON.stringify(body)}`,
        );
      }
      resolve();
    }),
  );

(async () => {
  const total = Number(count);
  for (let i = 0; i < total; i++) {
    logger.send({
      message: { action: "login", user: "alice", src_ip: "10.1.2.3", seq: i },
      severity: "info",
      metadata: { host: "web-3", source: "auth.log", sourcetype: "_json", index: "main" },
    });
    if ((i + 1) % 25 === 0 || i + 1 === total) {
      await flush();
    }
  }
  process.exit(failed ? 1 : 0);
})();
