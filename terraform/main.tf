# gemq on Google Cloud: APIs, service accounts and the roles each one needs. Every role is
# granted on the one resource that needs it (topic, subscription, queue, secret, service,
# service account), never project-wide, except Vertex AI's aiplatform.user and the build
# account's log and image writing, which have no narrower resource.

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
    "pubsub.googleapis.com",
    "redis.googleapis.com",
    "run.googleapis.com",
    "secretmanager.googleapis.com",
    "storage.googleapis.com",
    "vpcaccess.googleapis.com",
    var.gemini_backend == "vertex" ? "aiplatform.googleapis.com" : "generativelanguage.googleapis.com",
  ]

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

# One identity per role in the data flow.
resource "google_service_account" "ingest" {
  account_id   = "${var.name_prefix}-ingest"
  display_name = "gemq ingest function"
  description  = "Runs the ingest function: publishes task messages."
}

resource "google_service_account" "worker" {
  account_id   = "${var.name_prefix}-worker"
  display_name = "gemq worker function"
  description  = "Runs the worker function: calls Gemini, schedules Cloud Tasks, publishes results."
}

resource "google_service_account" "push" {
  account_id   = "${var.name_prefix}-push"
  display_name = "gemq Pub/Sub push identity"
  description  = "Identity in the OIDC token of the tasks push subscription; may only invoke the worker."
}

resource "google_service_account" "tasks_invoker" {
  account_id   = "${var.name_prefix}-tasks"
  display_name = "gemq Cloud Tasks invoker"
  description  = "Identity in the OIDC token of deferred Cloud Tasks; may only invoke the worker."
}

resource "google_service_account" "build" {
  account_id   = "${var.name_prefix}-build"
  display_name = "gemq function build"
  description  = "Builds the functions' images from the source archive (Cloud Build)."
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

  depends_on = [google_project_service.apis]
}

resource "google_project_iam_member" "worker_vertex" {
  count = var.gemini_backend == "vertex" ? 1 : 0

  project = var.project_id
  role    = "roles/aiplatform.user"
  member  = google_service_account.worker.member
}

resource "google_project_iam_member" "build" {
  for_each = toset(["roles/logging.logWriter", "roles/artifactregistry.writer"])

  project = var.project_id
  role    = each.value
  member  = google_service_account.build.member
}

resource "google_storage_bucket_iam_member" "build_reads_source" {
  bucket = google_storage_bucket.source.name
  role   = "roles/storage.objectViewer"
  member = google_service_account.build.member
}

# The Gemini API key: an existing secret (the default: create it before apply, see README) or,
# when gemini_api_key_secret_id is null, one Terraform creates from var.gemini_api_key.
resource "google_secret_manager_secret" "gemini_api_key" {
  count = var.gemini_backend == "api_key" && var.gemini_api_key_secret_id == null ? 1 : 0

  secret_id = "${var.name_prefix}-gemini-api-key"
  labels    = var.labels
  replication {
    auto {}
  }

  depends_on = [google_project_service.apis]
}

resource "google_secret_manager_secret_version" "gemini_api_key" {
  count = length(google_secret_manager_secret.gemini_api_key)

  secret      = google_secret_manager_secret.gemini_api_key[0].id
  secret_data = var.gemini_api_key

  lifecycle {
    precondition {
      condition     = var.gemini_api_key != null
      error_message = "Set gemini_api_key, or gemini_api_key_secret_id to a secret that already holds the key."
    }
  }
}

locals {
  gemini_secret_id = var.gemini_backend != "api_key" ? null : (
    var.gemini_api_key_secret_id != null ? var.gemini_api_key_secret_id : google_secret_manager_secret.gemini_api_key[0].secret_id
  )
}

resource "google_secret_manager_secret_iam_member" "worker_reads_gemini_key" {
  count = var.gemini_backend == "api_key" ? 1 : 0

  project   = var.project_id
  secret_id = local.gemini_secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = google_service_account.worker.member

  depends_on = [google_secret_manager_secret_version.gemini_api_key]
}
