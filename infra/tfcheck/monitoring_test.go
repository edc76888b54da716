package tfcheck

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestMonitoring: the dashboard charts every metric issue 15 asks for, from
// gemq's metrics (the names internal/metrics exports) and the platform's, and
// the alert policies cover dead letters, the 429 rate, Redis memory and a
// stalled job, notifying the configured channels; the worker exports its
// metrics (GEMQ_METRICS_EXPORT is in its environment; the value is not
// known at plan time, the map depending on Memorystore's address).
func TestMonitoring(t *testing.T) {
	p := testPlan(t).plan
	dash := p.Resource(t, "google_monitoring_dashboard.gemq[0]")
	var d struct {
		MosaicLayout struct {
			Tiles []struct {
				Widget struct {
					Title   string
					XyChart struct {
						DataSets []struct {
							TimeSeriesQuery struct{ PrometheusQuery string }
						}
					}
				}
			}
		}
	}
	if err := json.Unmarshal([]byte(dash.Values["dashboard_json"].(string)), &d); err != nil {
		t.Fatalf("dashboard_json: %v", err)
	}
	var queries []string
	for _, tile := range d.MosaicLayout.Tiles {
		for _, ds := range tile.Widget.XyChart.DataSets {
			queries = append(queries, ds.TimeSeriesQuery.PrometheusQuery)
		}
	}
	all := strings.Join(queries, "\n")
	for _, want := range []string{"gemq_window_used", "gemq_window_limit", "gemq_permits_total", "gemq_gemini_429_total",
		"gemq_reserved_slots", "gemq_dead_letters_total", "run_googleapis_com:container_instance_count",
		"run_googleapis_com:request_latencies_bucket", "redis_googleapis_com:stats_memory_usage_ratio"} {
		if !strings.Contains(all, want) {
			t.Errorf("no dashboard tile queries %s; queries:\n%s", want, all)
		}
	}
	if len(queries) != len(d.MosaicLayout.Tiles) {
		t.Errorf("%d tiles, %d queries: every tile one PromQL query", len(d.MosaicLayout.Tiles), len(queries))
	}

	channels := []any{"projects/my-project/notificationChannels/123"}
	conds := map[string]string{}
	for _, r := range p.ByType("google_monitoring_alert_policy") {
		if diff := cmp.Diff(channels, r.Values["notification_channels"]); diff != "" {
			t.Errorf("%s notification_channels (-want +got):\n%s", r.Address, diff)
		}
		for _, c := range blocks(r.Values["conditions"]) {
			if q := blocks(c["condition_prometheus_query_language"]); len(q) == 1 {
				conds[r.Address], _ = q[0]["query"].(string)
			}
			if q := blocks(c["condition_threshold"]); len(q) == 1 {
				conds[r.Address], _ = q[0]["filter"].(string)
			}
		}
	}
	for addr, want := range map[string]string{
		`google_monitoring_alert_policy.gemq["dead_letters"]`: "increase(gemq_dead_letters_total[10m])) > 0",
		`google_monitoring_alert_policy.gemq["rate_429"]`:     "rate(gemq_gemini_429_total[5m])) * 60 > 30",
		`google_monitoring_alert_policy.gemq["stalled"]`:      "(max(gemq_reserved_slots) > 0) unless on() (sum(increase(gemq_tasks_terminal_total[15m])) > 0)",
		"google_monitoring_alert_policy.redis_memory[0]":      `metric.type = "redis.googleapis.com/stats/memory/usage_ratio"`,
	} {
		if got, ok := conds[addr]; !ok || !strings.Contains(got, want) {
			t.Errorf("%s condition = %q (planned %v), want it to contain %q", addr, got, ok, want)
		}
	}
	names := p.Output(t, "environment_variable_names").(map[string]any)
	if !strings.Contains(strings.Join(toStrings(names["worker"]), ","), "GEMQ_METRICS_EXPORT") {
		t.Errorf("worker environment lacks GEMQ_METRICS_EXPORT: %v", names["worker"])
	}
}

func toStrings(v any) []string {
	var out []string
	for _, x := range v.([]any) {
		out = append(out, x.(string))
	}
	return out
}
