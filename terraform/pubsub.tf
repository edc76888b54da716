# Task messages flow through a push subscription that gemq owns (an Eventarc trigger's
# subscription cannot take a dead-letter policy): OIDC-authenticated pushes to the worker, an ack
# deadline equal to the worker's timeout (for push, the time Pub/Sub waits for the answer), a
# backoff between redeliveries, and a dead-letter topic after push_max_delivery_attempts.

resource "google_pubsub_topic" "tasks" {
  name   = "${var.name_prefix}-tasks"
  labels = var.labels

  depends_on = [time_sleep.apis_ready]
}

resource "google_pubsub_topic" "dead_letter" {
  name   = "${var.name_prefix}-tasks-dead-letter"
  labels = var.labels

  depends_on = [time_sleep.apis_ready]
}

resource "google_pubsub_topic" "results" {
  name   = "${var.name_prefix}-results"
  labels = var.labels

  depends_on = [time_sleep.apis_ready]
}

resource "google_pubsub_subscription" "tasks_push" {
  name                       = "${var.name_prefix}-tasks-push"
  topic                      = google_pubsub_topic.tasks.id
  ack_deadline_seconds       = var.worker.timeout_seconds
  message_retention_duration = "604800s"
  labels                     = var.labels

  push_config {
    push_endpoint = google_cloudfunctions2_function.worker.service_config[0].uri
    oidc_token {
      # The token's audience defaults to the push endpoint, the worker's URL.
      service_account_email = google_service_account.push.email
    }
  }

  retry_policy {
    minimum_backoff = var.push_retry.minimum_backoff
    maximum_backoff = var.push_retry.maximum_backoff
  }

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.dead_letter.id
    max_delivery_attempts = var.push_max_delivery_attempts
  }

  expiration_policy {
    ttl = "" # never expires
  }

  depends_on = [time_sleep.grants_propagated]
}

# Dead-lettered task messages are kept here for inspection and replay.
resource "google_pubsub_subscription" "dead_letter" {
  name                       = "${var.name_prefix}-tasks-dead-letter"
  topic                      = google_pubsub_topic.dead_letter.id
  message_retention_duration = "604800s"
  ack_deadline_seconds       = 60
  labels                     = var.labels

  expiration_policy {
    ttl = ""
  }

  depends_on = [time_sleep.apis_ready]
}

# The Pub/Sub service agent forwards to the dead-letter topic (publisher there) and acknowledges
# the forwarded message on the source subscription (subscriber there).
resource "google_pubsub_topic_iam_member" "dead_letter_publisher" {
  topic  = google_pubsub_topic.dead_letter.id
  role   = "roles/pubsub.publisher"
  member = local.pubsub_agent
}

resource "google_pubsub_subscription_iam_member" "dead_letter_subscriber" {
  subscription = google_pubsub_subscription.tasks_push.id
  role         = "roles/pubsub.subscriber"
  member       = local.pubsub_agent
}

resource "google_pubsub_topic_iam_member" "ingest_publishes_tasks" {
  topic  = google_pubsub_topic.tasks.id
  role   = "roles/pubsub.publisher"
  member = google_service_account.ingest.member
}

resource "google_pubsub_topic_iam_member" "worker_publishes_results" {
  topic  = google_pubsub_topic.results.id
  role   = "roles/pubsub.publisher"
  member = google_service_account.worker.member
}

# The durable copy of every result (on unless results_to_storage is false): a Cloud Storage
# subscription writes each result message's data, one JSON object a line, into JSONL files
# gs://BUCKET/results/YYYY-MM-DD/hh_mm_ssZ_UUID.jsonl, a new file every 5 minutes or 100 MB.
# The functions read them back (internal/archive: ingest's results API once an answer has left
# Redis, GEMQ_RESULT_BODY_GRACE after its publish), so the layout is in locals shared with their
# environment (functions.tf).
locals {
  results_prefix          = "results/"
  results_datetime_format = "YYYY-MM-DD/hh_mm_ssZ"
  results_max_duration_s  = 300
  results_env = var.results_to_storage ? {
    GEMQ_RESULTS_BUCKET          = google_storage_bucket.results[0].name
    GEMQ_RESULTS_PREFIX          = local.results_prefix
    GEMQ_RESULTS_DATETIME_FORMAT = local.results_datetime_format
    GEMQ_RESULTS_MAX_DURATION    = "${local.results_max_duration_s}s"
  } : {}
}
resource "google_storage_bucket" "results" {
  count = var.results_to_storage ? 1 : 0

  name                        = "${var.project_id}-${var.name_prefix}-results"
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = var.force_destroy_buckets
  labels                      = var.labels

  dynamic "lifecycle_rule" {
    for_each = var.results_retention_days > 0 ? [var.results_retention_days] : []
    content {
      condition {
        age = lifecycle_rule.value
      }
      action {
        type = "Delete"
      }
    }
  }

  depends_on = [time_sleep.apis_ready]
}

resource "google_storage_bucket_iam_member" "results_writer" {
  for_each = var.results_to_storage ? toset(["roles/storage.objectCreator", "roles/storage.legacyBucketReader"]) : toset([])

  bucket = google_storage_bucket.results[0].name
  role   = each.value
  member = local.pubsub_agent
}

# Ingest reads the result files back (list and get) for the results API once the answers have
# left Redis, and to count a job's results after Redis lost its state.
resource "google_storage_bucket_iam_member" "ingest_reads_results" {
  count = var.results_to_storage ? 1 : 0

  bucket = google_storage_bucket.results[0].name
  role   = "roles/storage.objectViewer"
  member = google_service_account.ingest.member
}

resource "google_pubsub_subscription" "results_storage" {
  count = var.results_to_storage ? 1 : 0

  name   = "${var.name_prefix}-results-storage"
  topic  = google_pubsub_topic.results.id
  labels = var.labels
  # max_duration "may not exceed the subscription's acknowledgment deadline" (CloudStorageConfig,
  # https://cloud.google.com/pubsub/docs/reference/rest/v1/projects.subscriptions#cloudstorageconfig):
  # messages stay unacknowledged while the file holding them is open. The default deadline (10 s)
  # would refuse 300 s.
  ack_deadline_seconds       = local.results_max_duration_s
  message_retention_duration = "604800s"

  cloud_storage_config {
    bucket                   = google_storage_bucket.results[0].name
    filename_prefix          = local.results_prefix
    filename_datetime_format = local.results_datetime_format
    filename_suffix          = ".jsonl"
    max_duration             = "${local.results_max_duration_s}s"
    max_bytes                = 100000000
  }

  depends_on = [time_sleep.grants_propagated]
}
