# Memorystore for Redis 7 holds the limiter's state, so it must never evict (noeviction). The
# functions reach its private IP through a Serverless VPC Access connector: Cloud Functions'
# google_cloudfunctions2_function has no Direct VPC egress setting in provider 6.x, and a
# connector works with the instance's default DIRECT_PEERING connect mode. Only private ranges
# go through the connector; Gemini and Google APIs are reached directly.

locals {
  network_name = var.network != null ? var.network : google_compute_network.this[0].name
  network_id   = "projects/${var.project_id}/global/networks/${local.network_name}"
  redis_tls    = var.redis.transit_encryption_mode == "SERVER_AUTHENTICATION"
  # Memorystore publishes its next server CA long before it rotates to it: trust every one
  # listed, or connections fail the day the instance switches.
  redis_ca_bundle = join("", [for c in google_redis_instance.limiter.server_ca_certs : c.cert])
}

# A network of gemq's own unless var.network names an existing one: many organisations'
# projects have no "default" network (constraints/compute.skipDefaultNetworkCreation).
resource "google_compute_network" "this" {
  count = var.network == null ? 1 : 0

  name                    = "${var.name_prefix}-vpc"
  description             = "gemq: Memorystore's peering and the functions' VPC connector."
  auto_create_subnetworks = false

  depends_on = [time_sleep.apis_ready]
}

# The connector's /28, a subnet of its own in either network (the connector then needs no
# ip_cidr_range and cannot collide with a range created later).
resource "google_compute_subnetwork" "connector" {
  name          = "${var.name_prefix}-connector"
  region        = var.region
  network       = local.network_id
  ip_cidr_range = var.connector_cidr

  depends_on = [time_sleep.apis_ready, google_compute_network.this]
}

resource "google_vpc_access_connector" "this" {
  name          = "${var.name_prefix}-connector"
  region        = var.region
  machine_type  = var.connector.machine_type
  min_instances = var.connector.min_instances
  max_instances = var.connector.max_instances

  subnet {
    name = google_compute_subnetwork.connector.name
  }

  depends_on = [time_sleep.apis_ready]
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

  # Job state, leases and results live here until they expire: snapshots let a restarted or
  # failed-over instance come back with them (STANDARD_HA keeps a replica besides).
  persistence_config {
    persistence_mode    = var.redis.rdb_snapshot_period == "DISABLED" ? "DISABLED" : "RDB"
    rdb_snapshot_period = var.redis.rdb_snapshot_period == "DISABLED" ? null : var.redis.rdb_snapshot_period
  }

  redis_configs = {
    # Evicting a limiter key would forget admitted requests and break the quota invariant:
    # a full instance must fail writes (the worker then answers non-2xx and Pub/Sub redelivers).
    "maxmemory-policy" = "noeviction"
  }

  depends_on = [time_sleep.apis_ready, google_compute_network.this]
}

# The AUTH string reaches the functions as a secret environment variable, never a plain one.
resource "google_secret_manager_secret" "redis_auth" {
  count = var.redis.auth_enabled ? 1 : 0

  secret_id = "${var.name_prefix}-redis-auth"
  labels    = var.labels
  replication {
    auto {}
  }

  depends_on = [time_sleep.apis_ready]
}

resource "google_secret_manager_secret_version" "redis_auth" {
  count = var.redis.auth_enabled ? 1 : 0

  secret = google_secret_manager_secret.redis_auth[0].id
  # Write-only, so the plan and this resource's state hold no second copy of the AUTH string
  # (the instance's own auth_string attribute is in the state regardless: keep the state in
  # the remote backend). A new instance means a new string: replace the version with it.
  secret_data_wo         = google_redis_instance.limiter.auth_string
  secret_data_wo_version = 1

  lifecycle {
    replace_triggered_by = [google_redis_instance.limiter.id]
  }
}

# Keyed by the service account's resource name: infra/tfcheck tells the member by the key.
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
