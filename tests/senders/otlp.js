// Sends COUNT log records over OTLP/HTTP with the OpenTelemetry SDK's own exporters, as an
// instrumented application would, in protobuf or JSON. Exits non-zero when an export fails.
// Usage: node otlp.js ENDPOINT TOKEN COUNT proto|json
"use strict";
const { LoggerProvider, BatchLogRecordProcessor } = require("@opentelemetry/sdk-logs");
const { resourceFromAttributes } = require("@opentelemetry/resources");

const [url, token, count, encoding] = process.argv.slice(2);
const { OTLPLogExporter } = require(
  encoding === "json"
    ? "@opentelemetry/exporter-logs-otlp-http"
    : "@opentelemetry/exporter-logs-otlp-proto",
);
const inner = new OTLPLogExporter({ url, headers: { Authorization: `Bearer ${token}` } });
let failed = false;
// The exporter reports failures only to its callback; pass them on as the exit code.
const exporter = {
  export(records, done) {
    inner.export(records, (result) => {
      if (result.code !== 0) {
        failed = true;
        console.error("otlp export failed:", result.error && result.error.message);
      }
      done(result);
    });
  },
  shutdown: () => inner.shutdown(),
  forceFlush: () => (inner.forceFlush ? inner.forceFlush() : Promise.resolve()),
};
const provider = new LoggerProvider({
  resource: resourceFromAttributes({ "service.name": "billing", "host.name": "api-7" }),
  processors: [new BatchLogRecordProcessor({ exporter, maxExportBatchSize: 50 })],
});
const logger = provider.getLogger("auth", "1.0.0");
for (let i = 0; i < Number(count); i++) {
  logger.emit({
    severityNumber: 13,
    severityText: "WARN",
    body: `Failed password for root from 10.1.2.3 port ${40000 + i} ssh2`,
    attributes: { "user.name": "root", "source.ip": "10.1.2.3", seq: i },
  });
}
provider
  .shutdown()
  .then(() => process.exit(failed ? 1 : 0))
  .catch((error) => {
    console.error("otlp shutdown failed:", error);
    process.exit(1);
  });
