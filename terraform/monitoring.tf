# Cloud Monitoring: a dashboard of the quota at work and alert policies. gemq's own metrics (README
# "Observability") are exported by the worker over OTLP to the Telemetry API and land as Managed
# Prometheus metrics, queried here with PromQL; Cloud Run's and Memorystore's are the platform's.
# https://docs.cloud.google.com/stackdriver/docs/reference/telemetry/v1.metrics
# https://cloud.google.com/monitoring/api/ref_v3/rest/v1/projects.dashboards

locals {
  monitoring = var.monitoring.enabled ? 1 : 0

  # PromQL over gemq's metrics. Each instance reports its own admissions (sum) and the
  # scope-wide gauges (max).
  promql = {
    occupancy  = "sum by (scope, dimension) (gemq_window_used)"
    limit      = "max by (scope, dimension) (gemq_window_limit)"
    permits    = "sum by (outcome, dimension) (rate(gemq_permits_total[5m])) * 60"
    rate_429   = "sum by (kind) (rate(gemq_gemini_429_total[5m])) * 60"
    waiting    = "max by (scope) (gemq_reserved_slots)"
    ahead      = "max by (scope) (gemq_reserved_ahead_seconds)"
    dead       = "sum by (kind) (increase(gemq_dead_letters_total[10m]))"
    terminal   = "sum by (outcome) (rate(gemq_tasks_terminal_total[5m])) * 60"
    instances  = "sum by (service_name) (run_googleapis_com:container_instance_count{monitored_resource=\"cloud_run_revision\",service_name=~\"${var.name_prefix}-(ingest|worker)\"})"
    latency_95 = "histogram_quantile(0.95, sum by (service_name, le) (rate(run_googleapis_com:request_latencies_bucket{monitored_resource=\"cloud_run_revision\",service_name=~\"${var.name_prefix}-(ingest|worker)\"}[5m])))"
    redis_mem  = "max(redis_googleapis_com:stats_memory_usage_ratio{monitored_resource=\"redis_instance\",instance_id=~\".*/${google_redis_instance.limiter.name}\"})"
  }

  tiles = [
    { title = "Quota occupancy per dimension (admissions in the window)", query = local.promql.occupancy },
    { title = "Effective limit per dimension (the line occupancy stays under)", query = local.promql.limit },
    { title = "Permits per minute by outcome and binding dimension", query = local.promql.permits },
    { title = "429s from Gemini per minute, by kind", query = local.promql.rate_429 },
    { title = "Tasks waiting for a reserved slot", query = local.promql.waiting },
    { title = "Last reserved slot, seconds ahead", query = local.promql.ahead },
    { title = "Tasks finished per minute, by outcome", query = local.promql.terminal },
    { title = "Dead letters (10 min)", query = local.promql.dead },
    { title = "Function instances", query = local.promql.instances },
    { title = "Function request latency, p95 (s)", query = local.promql.latency_95 },
    { title = "Memorystore memory usage ratio", query = local.promql.redis_mem },
  ]
}

resource "google_monitoring_dashboard" "gemq" {
  count   = local.monitoring
  project = var.project_id
  dashboard_json = jsonencode({
    displayName = "gemq (${var.name_prefix})"
    mosaicLayout = {
      columns = 12
      tiles = [for i, t in local.tiles : {
        xPos   = (i % 2) * 6
        yPos   = floor(i / 2) * 4
        width  = 6
        height = 4
        widget = {
          title = t.title
          xyChart = {
            dataSets = [{
              plotType        = "LINE"
              timeSeriesQuery = { prometheusQuery = t.query }
            }]
          }
        }
      }]
    }
  })

  depends_on = [time_sleep.apis_ready]
}

locals {
  alerts = {
    dead_letters = {
      name     = "gemq: dead letters"
      query    = "sum(increase(gemq_dead_letters_total[10m])) > 0"
      duration = "0s"
      doc      = "The worker dead-lettered messages (retries exhausted, undecodable, or foreign). Read them: gcloud pubsub subscriptions pull on the dead-letter subscription; replay with gemq dlq replay (README, Dead letters)."
    }
    rate_429 = {
      name     = "gemq: 429s from Gemini"
      query    = "sum(rate(gemq_gemini_429_total[5m])) * 60 > ${var.monitoring.rate_429_per_minute}"
      duration = "300s"
      doc      = "Gemini answers 429 more than ${var.monitoring.rate_429_per_minute} times a minute: the configured quota is above what Gemini enforces, or its capacity is short. The limiter adapts (gemq_window_limit); check the quota configuration."
    }
    stalled = {
      name     = "gemq: job stalled"
      query    = "(max(gemq_reserved_slots) > 0) unless on() (sum(increase(gemq_tasks_terminal_total[${var.monitoring.stall_minutes}m])) > 0)"
      duration = "${var.monitoring.stall_minutes * 60}s"
      doc      = "Tasks wait for reserved slots but none finished for ${var.monitoring.stall_minutes} minutes: Cloud Tasks not dispatching, the worker failing to start, or Gemini unreachable."
    }
  }
}

resource "google_monitoring_alert_policy" "gemq" {
  for_each = var.monitoring.enabled ? local.alerts : {}

  project               = var.project_id
  display_name          = each.value.name
  combiner              = "OR"
  notification_channels = var.monitoring.notification_channels
  user_labels           = var.labels

  conditions {
    display_name = each.value.name
    condition_prometheus_query_language {
      query               = each.value.query
      duration            = each.value.duration
      evaluation_interval = "60s"
    }
  }

  documentation {
    content   = each.value.doc
    mime_type = "text/markdown"
  }

  depends_on = [time_sleep.apis_ready]
}

resource "google_monitoring_alert_policy" "redis_memory" {
  count = local.monitoring

  project               = var.project_id
  display_name          = "gemq: Memorystore memory"
  combiner              = "OR"
  notification_channels = var.monitoring.notification_channels
  user_labels           = var.labels

  conditions {
    display_name = "Memorystore memory usage ratio above ${var.monitoring.redis_memory_ratio}"
    condition_threshold {
      filter          = "resource.type = \"redis_instance\" AND resource.labels.instance_id = \"projects/${var.project_id}/locations/${var.region}/instances/${google_redis_instance.limiter.name}\" AND metric.type = \"redis.googleapis.com/stats/memory/usage_ratio\""
      comparison      = "COMPARISON_GT"
      threshold_value = var.monitoring.redis_memory_ratio
      duration        = "300s"
      aggregations {
        alignment_period   = "60s"
        per_series_aligner = "ALIGN_MAX"
      }
    }
  }

  documentation {
    content   = "Memorystore (noeviction) is over ${var.monitoring.redis_memory_ratio * 100}% full: when full it refuses writes and the worker parks every task. Raise redis.memory_size_gb or lower result_ttl."
    mime_type = "text/markdown"
  }

  depends_on = [time_sleep.apis_ready]
}

# The worker writes its metrics through the Telemetry API; the permission has no narrower
# resource than the project.
resource "google_project_iam_member" "worker_metrics" {
  count = local.monitoring

  project = var.project_id
  role    = "roles/telemetry.metricsWriter"
  member  = google_service_account.worker.member
}
