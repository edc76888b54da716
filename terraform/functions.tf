# The two Cloud Functions (2nd gen, on Cloud Run), built by the Go buildpack from the same source
# archive: the module's root package registers both entry points.

locals {
  # The worker tells Cloud Tasks to post deferred tasks to its own URL, which it cannot read from
  # its own attributes: a function's Cloud Run URL is deterministic, https://NAME-PROJECT_NUMBER.REGION.run.app.
  worker_name = "${var.name_prefix}-worker"
  worker_url  = "https://${local.worker_name}-${data.google_project.this.number}.${var.region}.run.app"
  queue_path  = "projects/${var.project_id}/locations/${var.region}/queues/${google_cloud_tasks_queue.deferred.name}"

  common_env = merge(
    {
      GOOGLE_CLOUD_PROJECT = var.project_id
      GEMQ_TASKS_TOPIC     = google_pubsub_topic.tasks.name
      GEMQ_RESULTS_TOPIC   = google_pubsub_topic.results.name
      REDIS_ADDR           = "${google_redis_instance.limiter.host}:${google_redis_instance.limiter.port}"
      REDIS_TLS            = tostring(local.redis_tls)
      GEMQ_QUOTAS          = var.quotas_json
      GEMQ_RESULT_TTL      = var.result_ttl
      GEMQ_LOG_LEVEL       = var.log_level
    },
    local.redis_tls ? { REDIS_TLS_CA = local.redis_ca_bundle } : {},
    local.results_env,
    length(var.allowed_models) > 0 ? { GEMQ_ALLOWED_MODELS = join(",", var.allowed_models) } : {},
    var.default_model != "" ? { GEMQ_DEFAULT_MODEL = var.default_model } : {},
  )

  ingest_env = merge(local.common_env, {
    GEMQ_MAX_BODY_BYTES = tostring(var.ingest.max_body_bytes)
  })
  worker_env = merge(
    local.common_env,
    {
      GEMQ_TASKS_QUEUE           = local.queue_path
      GEMQ_WORKER_URL            = local.worker_url
      GEMQ_TASKS_SERVICE_ACCOUNT = google_service_account.tasks_invoker.email
      GEMQ_GEMINI_TIMEOUT        = "${var.gemini_timeout_seconds}s"
      GEMQ_FLEX_TIMEOUT          = "${var.flex_timeout_seconds}s"
      GEMQ_MAX_ATTEMPTS          = tostring(var.max_attempts)
      GEMQ_TOKEN_ESTIMATOR       = var.token_estimator
      GEMQ_BATCH_COLLECT         = "${var.batch.collect_seconds}s"
      GEMQ_BATCH_POLL_MIN        = "${var.batch.poll_min_seconds}s"
      GEMQ_BATCH_POLL_MAX        = "${var.batch.poll_max_seconds}s"
      GEMQ_BATCH_ENQUEUED_TOKENS = tostring(var.batch.enqueued_tokens)
    },
    var.monitoring.enabled ? { GEMQ_METRICS_EXPORT = "otlp" } : {},
    var.gemini_backend == "vertex" ? {
      GOOGLE_GENAI_USE_VERTEXAI = "true"
      GOOGLE_CLOUD_LOCATION     = var.vertex_location
    } : {},
  )

  redis_secret_env = var.redis.auth_enabled ? [{
    key    = "REDIS_PASSWORD"
    secret = google_secret_manager_secret.redis_auth[0].secret_id
  }] : []
  gemini_secret_env = var.gemini_backend == "api_key" ? [{
    key    = "GEMINI_API_KEY"
    secret = local.gemini_secret_id
  }] : []
}

# IAM grants take effect over a minute or two after they return. A function created at once
# would have its build fail (no access to the sources bucket or the repository) or its first
# revision fail to start (secrets not yet readable): both functions wait for every grant their
# build and run need, and for the secrets' first versions. The push and results subscriptions
# wait too (Pub/Sub checks the service agent's access to the bucket when it creates one).
resource "time_sleep" "grants_propagated" {
  create_duration = var.iam_propagation_wait

  depends_on = [
    google_project_iam_member.build_logs,
    google_project_iam_member.build_reads_gcf_sources,
    google_artifact_registry_repository_iam_member.build_pushes_images,
    google_secret_manager_secret_iam_member.redis_auth,
    google_secret_manager_secret_version.redis_auth,
    google_secret_manager_secret_iam_member.worker_reads_gemini_key,
    google_secret_manager_secret_version.gemini_api_key,
    google_service_account_iam_member.worker_acts_as_tasks_invoker,
    google_service_account_iam_member.pubsub_agent_signs_push_tokens,
    google_cloud_tasks_queue_iam_member.worker_enqueues,
    google_project_iam_member.worker_vertex,
    google_project_iam_member.worker_metrics,
    google_pubsub_topic_iam_member.ingest_publishes_tasks,
    google_pubsub_topic_iam_member.worker_publishes_results,
    google_pubsub_topic_iam_member.dead_letter_publisher,
    google_storage_bucket_iam_member.results_writer,
    google_storage_bucket_iam_member.ingest_reads_results,
  ]
}

resource "google_cloudfunctions2_function" "ingest" {
  name        = "${var.name_prefix}-ingest"
  location    = var.region
  description = "gemq ingest: accepts jobs, publishes one task message per request, serves status and results."
  labels      = var.labels

  build_config {
    runtime           = var.go_runtime
    entry_point       = "Ingest"
    service_account   = google_service_account.build.id
    docker_repository = google_artifact_registry_repository.functions.id
    source {
      storage_source {
        bucket = google_storage_bucket.source.name
        object = google_storage_bucket_object.source.name
      }
    }
  }

  service_config {
    available_memory                 = var.ingest.memory
    available_cpu                    = var.ingest.cpu
    timeout_seconds                  = var.ingest.timeout_seconds
    max_instance_request_concurrency = var.ingest.concurrency
    min_instance_count               = var.ingest.min_instances
    max_instance_count               = var.ingest.max_instances
    ingress_settings                 = var.ingest.ingress_settings
    all_traffic_on_latest_revision   = true
    service_account_email            = google_service_account.ingest.email
    vpc_connector                    = google_vpc_access_connector.this.id
    vpc_connector_egress_settings    = "PRIVATE_RANGES_ONLY"
    environment_variables            = local.ingest_env

    dynamic "secret_environment_variables" {
      for_each = local.redis_secret_env
      content {
        key        = secret_environment_variables.value.key
        project_id = var.project_id
        secret     = secret_environment_variables.value.secret
        version    = "latest"
      }
    }
  }

  # The worker first: on an update, ingest's new revision may publish envelope fields (job_created) that only
  # the new worker's strict decoder accepts; an older worker would dead-letter them as undecodable.
  depends_on = [time_sleep.grants_propagated, google_cloudfunctions2_function.worker]
}

resource "google_cloudfunctions2_function" "worker" {
  name        = local.worker_name
  location    = var.region
  description = "gemq worker: one task per call, from the Pub/Sub push subscription or a deferred Cloud Task."
  labels      = var.labels

  build_config {
    runtime           = var.go_runtime
    entry_point       = "Worker"
    service_account   = google_service_account.build.id
    docker_repository = google_artifact_registry_repository.functions.id
    source {
      storage_source {
        bucket = google_storage_bucket.source.name
        object = google_storage_bucket_object.source.name
      }
    }
  }

  service_config {
    available_memory                 = var.worker.memory
    available_cpu                    = var.worker.cpu
    timeout_seconds                  = var.worker.timeout_seconds
    max_instance_request_concurrency = var.worker.concurrency
    min_instance_count               = var.worker.min_instances
    max_instance_count               = var.worker.max_instances
    ingress_settings                 = var.worker.ingress_settings
    all_traffic_on_latest_revision   = true
    service_account_email            = google_service_account.worker.email
    vpc_connector                    = google_vpc_access_connector.this.id
    vpc_connector_egress_settings    = "PRIVATE_RANGES_ONLY"
    environment_variables            = local.worker_env

    dynamic "secret_environment_variables" {
      for_each = concat(local.redis_secret_env, local.gemini_secret_env)
      content {
        key        = secret_environment_variables.value.key
        project_id = var.project_id
        secret     = secret_environment_variables.value.secret
        version    = "latest"
      }
    }
  }

  depends_on = [time_sleep.grants_propagated]
}

# Invokers. A 2nd gen function is a Cloud Run service of the same name: run.invoker on it is what
# lets a caller in (cloudfunctions.invoker does not).
resource "google_cloud_run_service_iam_member" "worker_invokers" {
  # Keyed by the service account's resource name: infra/tfcheck tells the member by the key.
  for_each = {
    push          = google_service_account.push.member
    tasks_invoker = google_service_account.tasks_invoker.member
  }

  project  = var.project_id
  location = var.region
  service  = google_cloudfunctions2_function.worker.name
  role     = "roles/run.invoker"
  member   = each.value
}

resource "google_cloud_run_service_iam_member" "ingest_invokers" {
  for_each = toset(var.ingest_invokers)

  project  = var.project_id
  location = var.region
  service  = google_cloudfunctions2_function.ingest.name
  role     = "roles/run.invoker"
  member   = each.value
}
