package metrics

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetricgrpc"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/credentials/oauth"

	"github.com/gemq-dev/gemq/internal/config"
)

// ExportConfig says where metrics go.
type ExportConfig struct {
	// Endpoint is the OTLP gRPC endpoint, host:port: Cloud Monitoring's
	// telemetry.googleapis.com:443 (GEMQ_METRICS_ENDPOINT).
	Endpoint string
	// Interval between exports (GEMQ_METRICS_INTERVAL).
	Interval time.Duration
	// Timeout bounds one export; a failed export is dropped, never retried
	// into the next.
	Timeout time.Duration
	// Project is the Google Cloud project the points are written to
	// (gcp.project_id); Service names the job (the function).
	Project, Service string
	// Location is the prometheus_target location (cloud.region).
	Location string
	// Insecure dials without TLS or credentials (tests, a local collector).
	Insecure bool
}

// Export builds a MeterProvider that pushes to cfg.Endpoint over OTLP
// every cfg.Interval, authenticated with Application Default Credentials
// (the function's service account). Recording never waits for an export:
// the periodic reader collects and pushes on its own goroutine, each push
// bounded by cfg.Timeout, so an endpoint that is down or slow costs
// dropped points, not latency. Each process is its own series
// (service.instance.id is random), as Cloud Monitoring requires of
// concurrent writers. Shut the provider down to flush.
func Export(ctx context.Context, cfg ExportConfig) (*sdkmetric.MeterProvider, error) {
	opts := []otlpmetricgrpc.Option{otlpmetricgrpc.WithEndpoint(cfg.Endpoint), otlpmetricgrpc.WithTimeout(cfg.Timeout),
		otlpmetricgrpc.WithRetry(otlpmetricgrpc.RetryConfig{Enabled: false})}
	if cfg.Insecure {
		opts = append(opts, otlpmetricgrpc.WithInsecure(),
			otlpmetricgrpc.WithDialOption(grpc.WithTransportCredentials(insecure.NewCredentials())))
	} else {
		creds, err := oauth.NewApplicationDefault(ctx, "https://www.googleapis.com/auth/monitoring.write")
		if err != nil {
			return nil, fmt.Errorf("metrics: application default credentials: %w", err)
		}
		opts = append(opts, otlpmetricgrpc.WithDialOption(grpc.WithPerRPCCredentials(creds)))
	}
	exp, err := otlpmetricgrpc.New(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("metrics: otlp exporter: %w", err)
	}
	var id [8]byte
	rand.Read(id[:])
	res := resource.NewSchemaless(
		attribute.String("service.name", cfg.Service),
		attribute.String("service.instance.id", hex.EncodeToString(id[:])),
		attribute.String("gcp.project_id", cfg.Project),
		attribute.String("cloud.region", cfg.Location),
		attribute.String("cloud.platform", "gcp_cloud_run"),
	)
	return sdkmetric.NewMeterProvider(sdkmetric.WithResource(res), noExemplars,
		sdkmetric.WithReader(sdkmetric.NewPeriodicReader(exp, sdkmetric.WithInterval(cfg.Interval),
			sdkmetric.WithTimeout(cfg.Timeout)))), nil
}

// Start returns the Recorder a function records on, over the global
// MeterProvider: when cfg.MetricsExport is "otlp" it first installs one
// that exports to cfg.MetricsEndpoint (export errors are logged as
// warnings on log); otherwise it records on whatever provider the process
// has (the local view's, set by gemq before the stack starts, or OTel's
// no-op default). insp feeds the occupancy gauges.
func Start(ctx context.Context, cfg config.Config, service string, insp Inspector, log *slog.Logger) (*Recorder, error) {
	if cfg.MetricsExport == "otlp" {
		mp, err := Export(ctx, ExportConfig{Endpoint: cfg.MetricsEndpoint, Interval: cfg.MetricsInterval,
			Timeout: 10 * time.Second, Project: cfg.Project, Service: service, Location: cfg.Location})
		if err != nil {
			return nil, err
		}
		otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
			log.Warn("metrics export", "error", err.Error())
		}))
		otel.SetMeterProvider(mp)
	}
	return New(otel.GetMeterProvider(), insp, cfg.Quotas)
}
