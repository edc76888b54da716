# gemq on Google Cloud: APIs, service accounts and the roles each one needs. Every role is
# granted on the one resource that needs it (topic, subscription, queue, secret, service,
# service account, repository, bucket), never project-wide, except Vertex AI's aiplatform.user
# and the build account's log writing, which have no narrower resource, and its read of the
# Google-managed gcf-v2-sources bucket, a project grant conditioned on that bucket's name.

data "google_project" "this" {
  project_id = var.project_id
}

locals {
  apis = [
    "artifactregistry.googleapis.com",
    "cloudbuild.googleapis.com",
    "cloudfunctions.googleapis.com",
    "cloudtasks.googleapis.com",
    "compute.googleapis.com",
    "iam.googleapis.com",
    "monitoring.googleapis.com",
    "pubsub.googleapis.com",
    "redis.googleapis.com",
    "run.googleapis.com",
    "secretmanager.googleapis.com",
    "storage.googleapis.com",
    "telemetry.googleapis.com",
    "vpcaccess.googleapis.com",
    var.gemini_backend == "vertex" ? "aiplatform.googleapis.com" : "generativelanguage.googleapis.com",
  ]

  gcf_sources_bucket = "gcf-v2-sources-${data.google_project.this.number}-${var.region}"

  # The Pub/Sub service agent: it forwards undeliverable messages to the dead-letter topic,
  # signs the push OIDC tokens and writes the Cloud Storage subscription's files.
  pubsub_agent = "serviceAccount:service-${data.google_project.this.number}@gcp-sa-pubsub.iam.gserviceaccount.com"
}

resource "google_project_service" "apis" {
  for_each = var.enable_apis ? toset(local.apis) : toset([])

  project            = var.project_id
  service            = each.value
  disable_on_destroy = false
}

# Enabling an API returns before every region's control plane accepts calls and before the
# service's agent (Pub/Sub's, Cloud Build's, Cloud Functions') exists to be granted roles. Every
# resource of an API enabled here depends on this wait, not on google_project_service alone.
resource "time_sleep" "apis_ready" {
  count = var.enable_apis ? 1 : 0

  create_duration = var.api_enablement_wait
  triggers        = { apis = join(",", sort(local.apis)) }

  depends_on = [google_project_service.apis]
}

# One identity per role in the data flow.
resource "google_service_account" "ingest" {
  account_id   = "${var.name_prefix}-ingest"
  display_name = "gemq ingest function"
  description  = "Runs the ingest function: publishes task messages."

  depends_on = [time_sleep.apis_ready]
}

resource "google_service_account" "worker" {
  account_id   = "${var.name_prefix}-worker"
  display_name = "gemq worker function"
  description  = "Runs the worker function: calls Gemini, schedules Cloud Tasks, publishes results."

  depends_on = [time_sleep.apis_ready]
}

resource "google_service_account" "push" {
  account_id   = "${var.name_prefix}-push"
  display_name = "gemq Pub/Sub push identity"
  description  = "Identity in the OIDC token of the tasks push subscription; may only invoke the worker."

  depends_on = [time_sleep.apis_ready]
}

resource "google_service_account" "tasks_invoker" {
  account_id   = "${var.name_prefix}-tasks"
  display_name = "gemq Cloud Tasks invoker"
  description  = "Identity in the OIDC token of deferred Cloud Tasks; may only invoke the worker."

  depends_on = [time_sleep.apis_ready]
}

resource "google_service_account" "build" {
  account_id   = "${var.name_prefix}-build"
  display_name = "gemq function build"
  description  = "Builds the functions' images from the source archive (Cloud Build)."

  depends_on = [time_sleep.apis_ready]
}

# The worker creates Cloud Tasks whose OIDC token names the invoker account: that takes actAs
# (iam.serviceAccountUser) on that one account, plus enqueuer on that one queue.
resource "google_service_account_iam_member" "worker_acts_as_tasks_invoker" {
  service_account_id = google_service_account.tasks_invoker.name
  role               = "roles/iam.serviceAccountUser"
  member             = google_service_account.worker.member
}

resource "google_cloud_tasks_queue_iam_member" "worker_enqueues" {
  project  = var.project_id
  location = var.region
  name     = google_cloud_tasks_queue.deferred.name
  role     = "roles/cloudtasks.enqueuer"
  member   = google_service_account.worker.member
}

# Pub/Sub mints the push OIDC token for the push account (needed in projects created before
# April 2021; harmless after).
resource "google_service_account_iam_member" "pubsub_agent_signs_push_tokens" {
  service_account_id = google_service_account.push.name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = local.pubsub_agent

  depends_on = [time_sleep.apis_ready]
}

resource "google_project_iam_member" "worker_vertex" {
  count = var.gemini_backend == "vertex" ? 1 : 0

  project = var.project_id
  role    = "roles/aiplatform.user"
  member  = google_service_account.worker.member
}

# The build account writes build logs (no narrower resource than the project), pushes the image
# to gemq's own repository, and reads the source archive: Cloud Functions copies it from gemq's
# source bucket into its own gcf-v2-sources-PROJECT_NUMBER-REGION bucket, and the build's fetch
# step reads it from there. That bucket is Google-managed and may not exist before the first
# deploy, so a bucket grant cannot be made; a project grant whose IAM condition admits that one
# bucket's name (and its objects') is the narrowest that works on a fresh project.
resource "google_project_iam_member" "build_logs" {
  project = var.project_id
  role    = "roles/logging.logWriter"
  member  = google_service_account.build.member
}

resource "google_project_iam_member" "build_reads_gcf_sources" {
  project = var.project_id
  role    = "roles/storage.objectViewer"
  member  = google_service_account.build.member

  condition {
    title       = "gcf-v2-sources bucket only"
    description = "Cloud Functions' staging bucket of function sources in ${var.region}, read by the build's fetch step."
    expression  = "resource.name.startsWith(\"projects/_/buckets/${local.gcf_sources_bucket}\")"
  }
}

resource "google_artifact_registry_repository_iam_member" "build_pushes_images" {
  project    = var.project_id
  location   = google_artifact_registry_repository.functions.location
  repository = google_artifact_registry_repository.functions.name
  role       = "roles/artifactregistry.writer"
  member     = google_service_account.build.member
}

# The functions' images. Every deploy pushes a new image (and build cache); the cleanup policy
# deletes versions older than image_retention_days but always keeps the newest few, so the
# images the functions run are never removed.
resource "google_artifact_registry_repository" "functions" {
  repository_id = "${var.name_prefix}-functions"
  location      = var.region
  format        = "DOCKER"
  description   = "gemq function images built by Cloud Functions."
  labels        = var.labels

  cleanup_policy_dry_run = false
  cleanup_policies {
    id     = "delete-old"
    action = "DELETE"
    condition {
      tag_state  = "ANY"
      older_than = "${var.image_retention_days * 86400}s"
    }
  }
  cleanup_policies {
    id     = "keep-recent"
    action = "KEEP"
    most_recent_versions {
      keep_count = 5
    }
  }

  depends_on = [time_sleep.apis_ready]
}

# The Gemini API key: an existing secret (the default: create it before apply, see README) or,
# when gemini_api_key_secret_id is null, one Terraform creates from the ephemeral
# var.gemini_api_key.
resource "google_secret_manager_secret" "gemini_api_key" {
  count = var.gemini_backend == "api_key" && var.gemini_api_key_secret_id == null ? 1 : 0

  secret_id = "${var.name_prefix}-gemini-api-key"
  labels    = var.labels
  replication {
    auto {}
  }

  depends_on = [time_sleep.apis_ready]
}

resource "google_secret_manager_secret_version" "gemini_api_key" {
  count = length(google_secret_manager_secret.gemini_api_key)

  secret = google_secret_manager_secret.gemini_api_key[0].id
  # Write-only: sent to Secret Manager, never kept in the plan or the state. Bump
  # gemini_api_key_version to store a new key.
  secret_data_wo         = var.gemini_api_key
  secret_data_wo_version = var.gemini_api_key_version
}

locals {
  gemini_secret_id = var.gemini_backend != "api_key" ? null : (
    var.gemini_api_key_secret_id != null ? var.gemini_api_key_secret_id : google_secret_manager_secret.gemini_api_key[0].secret_id
  )
}

resource "google_secret_manager_secret_iam_member" "worker_reads_gemini_key" {
  count = var.gemini_backend == "api_key" ? 1 : 0

  project = var.project_id
  # The created secret by reference (not through local.gemini_secret_id), so the grant follows it.
  secret_id = var.gemini_api_key_secret_id != null ? var.gemini_api_key_secret_id : google_secret_manager_secret.gemini_api_key[0].secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = google_service_account.worker.member

  depends_on = [google_secret_manager_secret_version.gemini_api_key]
}
