// The per-request metrics are counted outside prom-client and read at scrape time: the exposition must still
// show every series with the right value.
import { Registry } from "prom-client";
import { describe, expect, it } from "vitest";
import { createGatewayMetrics } from "../../src/gateway/metrics.ts";

describe("gateway request metrics", () => {
  it("counts requests by route, method, status and decision, in-flight requests and latency", async () => {
    const registry = new Registry();
    const { requests } = createGatewayMetrics(registry);
    for (let i = 0; i < 4; i++) requests.started();
    requests.finished("default/invoices#0", "GET", 200, "allow", 0.002);
    requests.finished("default/invoices#0", "GET", 200, "allow", 0.004);
    requests.finished("default/invoices#0", "POST", 403, "deny", 0.0004);
    const text = await registry.metrics();
    expect(text).toContain(
      'phantomgate_requests_total{route="default/invoices#0",method="GET",status="200",decision="allow"} 2',
    );
    expect(text).toContain(
      'phantomgate_requests_total{route="default/invoices#0",method="POST",status="403",decision="deny"} 1',
    );
    expect(text).toMatch(/^phantomgate_inflight_requests 1$/m);
    expect(text).toContain('phantomgate_request_duration_seconds_count{route="default/invoices#0"} 3');
    expect(text).toContain(
      'phantomgate_request_duration_seconds_bucket{le="0.0005",route="default/invoices#0"} 1',
    );
    // Buckets are cumulative and end with +Inf; the sum adds the observed seconds.
    expect(text).toContain(
      'phantomgate_request_duration_seconds_bucket{le="0.0025",route="default/invoices#0"} 2',
    );
    expect(text).toContain(
      'phantomgate_request_duration_seconds_bucket{le="0.005",route="default/invoices#0"} 3',
    );
    expect(text).toContain(
      'phantomgate_request_duration_seconds_bucket{le="+Inf",route="default/invoices#0"} 3',
    );
    expect(text).toContain('phantomgate_request_duration_seconds_sum{route="default/invoices#0"} 0.0064');
    expect(text).toMatch(/^# TYPE phantomgate_request_duration_seconds histogram$/m);

    // A second scrape shows the same totals (collect rebuilds, never adds twice).
    requests.finished("none", "GET", 404, "deny", 0.0001);
    const again = await registry.metrics();
    expect(again).toContain(
      'phantomgate_requests_total{route="default/invoices#0",method="GET",status="200",decision="allow"} 2',
    );
    expect(again).toContain(
      'phantomgate_requests_total{route="none",method="GET",status="404",decision="deny"} 1',
    );
    expect(again).toMatch(/^phantomgate_inflight_requests 0$/m);
    // A value on a bound falls in that bucket (le means ≤); one above the last bound only in +Inf.
    requests.finished("none", "GET", 404, "deny", 10);
    requests.finished("none", "GET", 404, "deny", 11);
    const third = await registry.metrics();
    expect(third).toContain('phantomgate_request_duration_seconds_bucket{le="0.0005",route="none"} 1');
    expect(third).toContain('phantomgate_request_duration_seconds_bucket{le="5",route="none"} 1');
    expect(third).toContain('phantomgate_request_duration_seconds_bucket{le="10",route="none"} 2');
    expect(third).toContain('phantomgate_request_duration_seconds_bucket{le="+Inf",route="none"} 3');
    expect(third).toContain('phantomgate_request_duration_seconds_count{route="none"} 3');
    expect((await registry.getMetricsAsJSON()).map((metric) => metric.name)).toContain(
      "phantomgate_request_duration_seconds",
    );
  });
});
