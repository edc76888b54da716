# Memorystore for Redis 7 holds the limiter's state, so it must never evict (noeviction). The
# functions reach its private IP through a Serverless VPC Access connector: Cloud Functions'
# google_cloudfunctions2_function has no Direct VPC egress setting in provider 6.x, and a
# connector works with the instance's default DIRECT_PEERING connect mode. Only private ranges
# go through the connector; Gemini and Google APIs are reached directly.

locals {
  network_id = "projects/${var.project_id}/global/networks/${var.network}"
  redis_tls  = var.redis.transit_encryption_mode == "SERVER_AUTHENTICATION"
}

resource "google_vpc_access_connector" "this" {
  name          = "${var.name_prefix}-connector"
  region        = var.region
  network       = var.network
  ip_cidr_range = var.connector_cidr
  machine_type  = var.connector.machine_type
  min_instances = var.connector.min_instances
  max_instances = var.connector.max_instances

  depends_on = [google_project_service.apis]
}

resource "google_redis_instance" "limiter" {
  name                    = "${var.name_prefix}-limiter"
  display_name            = "gemq limiter state"
  region                  = var.region
  tier                    = var.redis.tier
  memory_size_gb          = var.redis.memory_size_gb
  redis_version           = "REDIS_7_2"
  authorized_network      = local.network_id
  connect_mode            = "DIRECT_PEERING"
  auth_enabled            = var.redis.auth_enabled
  transit_encryption_mode = var.redis.transit_encryption_mode
  labels                  = var.labels

  redis_configs = {
    # Evicting a limiter key would forget admitted requests and break the quota invariant:
    # a full instance must fail writes (the worker then answers non-2xx and Pub/Sub redelivers).
    "maxmemory-policy" = "noeviction"
  }

  depends_on = [google_project_service.apis]
}

# The AUTH string reaches the functions as a secret environment variable, never a plain one.
resource "google_secret_manager_secret" "redis_auth" {
  count = var.redis.auth_enabled ? 1 : 0

  secret_id = "${var.name_prefix}-redis-auth"
  labels    = var.labels
  replication {
    auto {}
  }

  depends_on = [google_project_service.apis]
}

resource "google_secret_manager_secret_version" "redis_auth" {
  count = var.redis.auth_enabled ? 1 : 0

  secret      = google_secret_manager_secret.redis_auth[0].id
  secret_data = google_redis_instance.limiter.auth_string
}

resource "google_secret_manager_secret_iam_member" "redis_auth" {
  for_each = var.redis.auth_enabled ? {
    ingest = google_service_account.ingest.member
    worker = google_service_account.worker.member
  } : {}

  project   = var.project_id
  secret_id = google_secret_manager_secret.redis_auth[0].secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = each.value
}
