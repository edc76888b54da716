variable "project_id" {
  type        = string
  description = "Google Cloud project to deploy gemq into. Its Gemini quota is the one gemq enforces."
}

variable "region" {
  type        = string
  description = "Region of the functions, the Cloud Tasks queue, Memorystore and the VPC connector."
  default     = "us-central1"
}

variable "name_prefix" {
  type        = string
  description = "Prefix of every resource name (lower case letters, digits and dashes)."
  default     = "gemq"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,11}$", var.name_prefix))
    error_message = "name_prefix must be 1-12 characters: a lower case letter, then lower case letters, digits or dashes."
  }
}

variable "labels" {
  type        = map(string)
  description = "Labels added to every resource that takes labels."
  default     = {}
}

variable "enable_apis" {
  type        = bool
  description = "Enable the Google Cloud APIs gemq needs (google_project_service). Turn off when the project's APIs are managed elsewhere."
  default     = true
}

variable "source_dir" {
  type        = string
  description = "Root of the gemq repository (the Go module) that the function source archive is built from. Defaults to this directory's parent."
  default     = null
}

variable "go_runtime" {
  type        = string
  description = "Cloud Run functions Go runtime ID. Must build the module's `go` directive (go.mod says 1.26)."
  default     = "go126"

  validation {
    condition     = can(regex("^go1[0-9]{2}$", var.go_runtime))
    error_message = "go_runtime must be a Go runtime ID such as go126."
  }
}

variable "ingest_invokers" {
  type        = list(string)
  description = "IAM members allowed to call the ingest function (user:..., group:..., serviceAccount:...). Nobody else can."
  default     = []

  validation {
    condition     = alltrue([for m in var.ingest_invokers : can(regex("^(user|group|serviceAccount|domain):", m))])
    error_message = "ingest_invokers entries must be IAM members such as user:me@example.com; allUsers and allAuthenticatedUsers are refused."
  }
}

variable "ingest" {
  type = object({
    memory           = optional(string, "512Mi")
    cpu              = optional(string, "1")
    timeout_seconds  = optional(number, 300)
    concurrency      = optional(number, 20)
    min_instances    = optional(number, 0)
    max_instances    = optional(number, 10)
    max_body_bytes   = optional(number, 33554432)
    ingress_settings = optional(string, "ALLOW_ALL")
  })
  description = "Ingest function sizing: memory (e.g. 512Mi), CPU (a job's requests are validated on every CPU given), request timeout, requests per instance, min/max instances, request body cap, ingress."
  default     = {}

  validation {
    condition     = contains(["ALLOW_ALL", "ALLOW_INTERNAL_ONLY", "ALLOW_INTERNAL_AND_GCLB"], var.ingest.ingress_settings)
    error_message = "ingest.ingress_settings must be ALLOW_ALL, ALLOW_INTERNAL_ONLY or ALLOW_INTERNAL_AND_GCLB."
  }
  validation {
    condition     = var.ingest.timeout_seconds >= 1 && var.ingest.timeout_seconds <= 3600 && var.ingest.max_instances >= var.ingest.min_instances
    error_message = "ingest.timeout_seconds must be 1-3600 and max_instances >= min_instances."
  }
}

variable "worker" {
  type = object({
    memory           = optional(string, "512Mi")
    cpu              = optional(string, "1")
    timeout_seconds  = optional(number, 300)
    concurrency      = optional(number, 40)
    min_instances    = optional(number, 0)
    max_instances    = optional(number, 50)
    ingress_settings = optional(string, "ALLOW_INTERNAL_ONLY")
  })
  description = <<-EOT
    Worker function sizing. timeout_seconds is also the push subscription's ack deadline (Pub/Sub waits that long
    for the worker's answer), so it must be at most 600 and above the Gemini timeout. ingress_settings defaults to
    ALLOW_INTERNAL_ONLY: Pub/Sub push and Cloud Tasks of the same project count as internal callers.
  EOT
  default     = {}

  validation {
    condition     = var.worker.timeout_seconds >= 10 && var.worker.timeout_seconds <= 600
    error_message = "worker.timeout_seconds must be 10-600: Pub/Sub push waits at most 600 s (the ack deadline) for an answer."
  }
  validation {
    condition     = contains(["ALLOW_INTERNAL_ONLY", "ALLOW_INTERNAL_AND_GCLB"], var.worker.ingress_settings)
    error_message = "worker.ingress_settings must be ALLOW_INTERNAL_ONLY or ALLOW_INTERNAL_AND_GCLB: only Pub/Sub and Cloud Tasks call the worker."
  }
  validation {
    condition     = var.worker.max_instances >= var.worker.min_instances
    error_message = "worker.max_instances must be >= worker.min_instances."
  }
}

variable "gemini_backend" {
  type        = string
  description = "\"api_key\": the Gemini API with a key from Secret Manager; \"vertex\": Vertex AI with the worker's service account."
  default     = "api_key"

  validation {
    condition     = contains(["api_key", "vertex"], var.gemini_backend)
    error_message = "gemini_backend must be \"api_key\" or \"vertex\"."
  }
}

variable "gemini_api_key_secret_id" {
  type        = string
  description = "Secret Manager secret (id in this project) that already holds the Gemini API key, when gemini_backend is api_key. Null: Terraform creates the secret from gemini_api_key."
  default     = "gemq-gemini-api-key"
}

variable "gemini_api_key" {
  type        = string
  description = "Gemini API key, used only when gemini_api_key_secret_id is null: Terraform then creates the secret and writes the key as a write-only value (kept in neither the plan nor the state). Ephemeral: pass it on every plan and apply, e.g. TF_VAR_gemini_api_key."
  default     = null
  sensitive   = true
  ephemeral   = true

  validation {
    condition     = var.gemini_backend != "api_key" || var.gemini_api_key_secret_id != null || var.gemini_api_key != null
    error_message = "Set gemini_api_key (e.g. TF_VAR_gemini_api_key), or gemini_api_key_secret_id to a secret that already holds the key."
  }
}

variable "gemini_api_key_version" {
  type        = number
  description = "Version of gemini_api_key that Terraform last wrote: bump it to store a new key (a write-only value is only sent when this changes)."
  default     = 1

  validation {
    condition     = var.gemini_api_key_version >= 1 && floor(var.gemini_api_key_version) == var.gemini_api_key_version
    error_message = "gemini_api_key_version must be a whole number >= 1."
  }
}

variable "vertex_location" {
  type        = string
  description = "Vertex AI location when gemini_backend is vertex (GOOGLE_CLOUD_LOCATION)."
  default     = "us-central1"
}

variable "gemini_timeout_seconds" {
  type        = number
  description = "Per-call Gemini timeout (GEMQ_GEMINI_TIMEOUT). Must leave the worker time to record the outcome before its own timeout."
  default     = 120

  validation {
    condition     = var.gemini_timeout_seconds >= 5 && var.gemini_timeout_seconds + 30 <= var.worker.timeout_seconds
    error_message = "gemini_timeout_seconds must be at least 5 and at least 30 s below worker.timeout_seconds."
  }
}

variable "flex_timeout_seconds" {
  type        = number
  description = "Per-call Gemini timeout at the flex service tier (GEMQ_FLEX_TIMEOUT), whose latency target is minutes; a flex call that times out is deferred, not failed. At least gemini_timeout_seconds and 30 s below worker.timeout_seconds."
  default     = 240

  validation {
    condition     = var.flex_timeout_seconds >= var.gemini_timeout_seconds && var.flex_timeout_seconds + 30 <= var.worker.timeout_seconds
    error_message = "flex_timeout_seconds must be at least gemini_timeout_seconds and at least 30 s below worker.timeout_seconds."
  }
}

variable "batch" {
  type = object({
    collect_seconds  = optional(number, 60)
    poll_min_seconds = optional(number, 30)
    poll_max_seconds = optional(number, 600)
    enqueued_tokens  = optional(number, 3000000)
  })
  description = "The Batch tier (service_tier batch): how long a group of batch-tier tasks collects before it is sent (GEMQ_BATCH_COLLECT), the back-off between polls of a running batch (GEMQ_BATCH_POLL_MIN, GEMQ_BATCH_POLL_MAX), and the model's Batch API enqueued-token limit (GEMQ_BATCH_ENQUEUED_TOKENS: 3,000,000 is Tier 1's for gemini-2.5-flash, higher tiers allow hundreds of millions). Seals and polls are Cloud Tasks on the worker's queue calling the worker: no other resource."
  default     = {}

  validation {
    condition = (var.batch.collect_seconds >= 1 && var.batch.poll_min_seconds >= 1 &&
    var.batch.poll_max_seconds >= var.batch.poll_min_seconds && var.batch.enqueued_tokens >= 1)
    error_message = "batch: collect_seconds and poll_min_seconds at least 1, poll_max_seconds at least poll_min_seconds, enqueued_tokens at least 1."
  }
}

variable "quotas_json" {
  type        = string
  description = "Quota configuration JSON (GEMQ_QUOTAS): safety, horizon and per project/model dimensions. See README."

  validation {
    condition     = can(jsondecode(var.quotas_json).scopes)
    error_message = "quotas_json must be JSON with a \"scopes\" list."
  }
}

variable "allowed_models" {
  type        = list(string)
  description = "Models ingest accepts (GEMQ_ALLOWED_MODELS). Empty: the models named in quotas_json."
  default     = []
}

variable "default_model" {
  type        = string
  description = "Model used when a job names none (GEMQ_DEFAULT_MODEL). Empty: jobs must name a model."
  default     = ""
}

variable "token_estimator" {
  type        = string
  description = "How the worker estimates input tokens before taking a permit (GEMQ_TOKEN_ESTIMATOR)."
  default     = "local"

  validation {
    condition     = contains(["local", "count_tokens"], var.token_estimator)
    error_message = "token_estimator must be local or count_tokens."
  }
}

variable "max_attempts" {
  type        = number
  description = "Attempts for transient Gemini failures before a task is dead-lettered (GEMQ_MAX_ATTEMPTS, 1-100)."
  default     = 5

  validation {
    condition     = var.max_attempts >= 1 && var.max_attempts <= 100 && floor(var.max_attempts) == var.max_attempts
    error_message = "max_attempts must be a whole number from 1 to 100."
  }
}

variable "result_ttl" {
  type        = string
  description = "How long results and task state stay in Redis (GEMQ_RESULT_TTL: a Go duration in hours, minutes or seconds such as 168h, 90m; 1m to 8760h)."
  default     = "168h"

  validation {
    # Accept what time.ParseDuration accepts in h/m/s units, and bound the total (try: Terraform
    # evaluates both sides of &&, and a malformed value must fail here, not error).
    condition = try(
      can(regex("^([0-9]+h)?([0-9]+m)?([0-9]+s)?$", var.result_ttl)) && var.result_ttl != "" &&
      sum(concat([0], [for p in regexall("([0-9]+)([hms])", var.result_ttl) : tonumber(p[0]) * lookup({ h = 3600, m = 60, s = 1 }, p[1], 0)])) >= 60 &&
      sum(concat([0], [for p in regexall("([0-9]+)([hms])", var.result_ttl) : tonumber(p[0]) * lookup({ h = 3600, m = 60, s = 1 }, p[1], 0)])) <= 8760 * 3600,
      false
    )
    error_message = "result_ttl must be a duration such as 168h or 90m (units h, m, s), from 1m to 8760h."
  }
}

variable "log_level" {
  type        = string
  description = "Function log level (GEMQ_LOG_LEVEL)."
  default     = "info"

  validation {
    condition     = contains(["debug", "info", "warn", "error"], var.log_level)
    error_message = "log_level must be debug, info, warn or error."
  }
}

variable "push_max_delivery_attempts" {
  type        = number
  description = "Deliveries of one task message before Pub/Sub moves it to the dead-letter topic (5-100)."
  default     = 10

  validation {
    condition     = var.push_max_delivery_attempts >= 5 && var.push_max_delivery_attempts <= 100
    error_message = "push_max_delivery_attempts must be 5-100 (Pub/Sub's bounds)."
  }
}

variable "push_retry" {
  type = object({
    minimum_backoff = optional(string, "10s")
    maximum_backoff = optional(string, "600s")
  })
  description = "Pub/Sub push redelivery backoff (retry_policy) after the worker answers non-2xx (e.g. Redis unreachable): durations in seconds such as \"10s\", 0-600s, minimum <= maximum."
  default     = {}

  validation {
    condition = (
      can(regex("^[0-9]+s$", var.push_retry.minimum_backoff)) && can(regex("^[0-9]+s$", var.push_retry.maximum_backoff)) &&
      try(tonumber(trimsuffix(var.push_retry.minimum_backoff, "s")) <= tonumber(trimsuffix(var.push_retry.maximum_backoff, "s")), false) &&
      try(tonumber(trimsuffix(var.push_retry.maximum_backoff, "s")) <= 600, false)
    )
    error_message = "push_retry backoffs must be whole seconds such as \"10s\", at most \"600s\" (Pub/Sub's bound), with minimum_backoff <= maximum_backoff."
  }
}

variable "tasks_queue" {
  type = object({
    max_dispatches_per_second = optional(number, 500)
    max_concurrent_dispatches = optional(number, 1000)
    max_attempts              = optional(number, 10)
    min_backoff               = optional(string, "1s")
    max_backoff               = optional(string, "300s")
    max_doublings             = optional(number, 5)
  })
  description = "Cloud Tasks queue for deferred tasks: dispatch rate limits and retry config (retries when the worker answers non-2xx)."
  default     = {}

  validation {
    condition     = var.tasks_queue.max_dispatches_per_second > 0 && var.tasks_queue.max_dispatches_per_second <= 500
    error_message = "tasks_queue.max_dispatches_per_second must be in (0, 500] (Cloud Tasks' bound)."
  }
  validation {
    condition     = var.tasks_queue.max_concurrent_dispatches >= 1 && var.tasks_queue.max_concurrent_dispatches <= 5000 && floor(var.tasks_queue.max_concurrent_dispatches) == var.tasks_queue.max_concurrent_dispatches
    error_message = "tasks_queue.max_concurrent_dispatches must be a whole number from 1 to 5000 (Cloud Tasks' bound)."
  }
  validation {
    condition     = var.tasks_queue.max_attempts == -1 || var.tasks_queue.max_attempts >= 1
    error_message = "tasks_queue.max_attempts must be -1 (unlimited) or at least 1."
  }
}

variable "redis" {
  type = object({
    tier                    = optional(string, "STANDARD_HA")
    accept_basic_data_loss  = optional(bool, false)
    memory_size_gb          = optional(number, 1)
    auth_enabled            = optional(bool, true)
    transit_encryption_mode = optional(string, "SERVER_AUTHENTICATION")
    rdb_snapshot_period     = optional(string, "ONE_HOUR")
  })
  description = <<-EOT
    Memorystore for Redis 7, which holds every job's state, the task leases, the results until result_ttl and
    the limiter's windows. tier: STANDARD_HA (default) keeps a replica in another zone and fails over to it;
    BASIC has no replica, and its data is flushed on every maintenance, resize and zone failure: running jobs
    lose their state (tasks are marked lost), results not yet fetched are gone from Redis, and the limiter
    treats every window as full for one period. BASIC is accepted only with accept_basic_data_loss = true.
    rdb_snapshot_period: RDB persistence (ONE_HOUR, SIX_HOURS, TWELVE_HOURS, TWENTY_FOUR_HOURS) so a restart
    keeps the last snapshot; DISABLED turns it off. Also size, AUTH and in-transit encryption
    (SERVER_AUTHENTICATION = TLS, or DISABLED). maxmemory-policy is always noeviction.
  EOT
  default     = {}

  validation {
    condition     = contains(["BASIC", "STANDARD_HA"], var.redis.tier)
    error_message = "redis.tier must be BASIC or STANDARD_HA."
  }
  validation {
    condition     = var.redis.tier != "BASIC" || var.redis.accept_basic_data_loss
    error_message = "redis.tier BASIC flushes gemq's state on maintenance and resize: set redis.accept_basic_data_loss = true to choose it anyway, or keep STANDARD_HA."
  }
  validation {
    condition     = contains(["ONE_HOUR", "SIX_HOURS", "TWELVE_HOURS", "TWENTY_FOUR_HOURS", "DISABLED"], var.redis.rdb_snapshot_period)
    error_message = "redis.rdb_snapshot_period must be ONE_HOUR, SIX_HOURS, TWELVE_HOURS, TWENTY_FOUR_HOURS or DISABLED."
  }
  validation {
    condition     = contains(["SERVER_AUTHENTICATION", "DISABLED"], var.redis.transit_encryption_mode)
    error_message = "redis.transit_encryption_mode must be SERVER_AUTHENTICATION or DISABLED."
  }
  validation {
    condition     = var.redis.memory_size_gb >= 1 && var.redis.memory_size_gb <= 300
    error_message = "redis.memory_size_gb must be 1-300."
  }
}

variable "network" {
  type        = string
  description = "Name of an existing VPC network in the project for Memorystore and the connector's subnet. Null (default): Terraform creates a network NAME_PREFIX-vpc."
  default     = null

  validation {
    condition     = var.network == null || can(regex("^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$", var.network))
    error_message = "network must be the name (not the URL) of a VPC network: lower case letters, digits and dashes, 1-63 characters."
  }
}

variable "connector_cidr" {
  type        = string
  description = "/28 range of the subnet Terraform creates for the Serverless VPC Access connector; must not overlap the network's other ranges."
  default     = "10.8.0.0/28"

  validation {
    condition     = can(cidrhost(var.connector_cidr, 0)) && endswith(var.connector_cidr, "/28") && try(cidrsubnet(var.connector_cidr, 0, 0) == var.connector_cidr, false)
    error_message = "connector_cidr must be a /28 CIDR range starting on its boundary, e.g. 10.8.0.0/28."
  }
}

variable "connector" {
  type = object({
    machine_type  = optional(string, "e2-micro")
    min_instances = optional(number, 2)
    max_instances = optional(number, 3)
  })
  description = "Serverless VPC Access connector sizing: machine_type f1-micro, e2-micro or e2-standard-4; 2 <= min_instances < max_instances <= 10. Its instances run (and are billed) even when gemq is idle."
  default     = {}

  validation {
    condition     = contains(["f1-micro", "e2-micro", "e2-standard-4"], var.connector.machine_type)
    error_message = "connector.machine_type must be f1-micro, e2-micro or e2-standard-4."
  }
  validation {
    condition     = var.connector.min_instances >= 2 && var.connector.max_instances <= 10 && var.connector.min_instances < var.connector.max_instances
    error_message = "connector sizes must satisfy 2 <= min_instances < max_instances <= 10 (Serverless VPC Access bounds)."
  }
}

variable "results_to_storage" {
  type        = bool
  description = "Write every result published on the results topic as JSON lines to a Cloud Storage bucket (a Cloud Storage subscription), the durable copy beyond Redis. With it, a finished task's answer leaves Redis GEMQ_RESULT_BODY_GRACE (15 min) after its result was published, leaving about 140 bytes a task for result_ttl, and ingest reads finished results back from the bucket. false: no bucket, and every answer stays in Redis for result_ttl (about 1.3 KB a task plus its answer: size Memorystore for it, README \"Sizing Memorystore\"); turn it off only when another subscriber keeps the results."
  default     = true
}

variable "results_retention_days" {
  type        = number
  description = "Days the result files stay in the results bucket before a lifecycle rule deletes them; 0 keeps them forever."
  default     = 0

  validation {
    condition     = var.results_retention_days >= 0 && floor(var.results_retention_days) == var.results_retention_days
    error_message = "results_retention_days must be a whole number >= 0."
  }
}

variable "source_retention_days" {
  type        = number
  description = "Days a function source archive stays in the source bucket (a lifecycle rule deletes older ones; Terraform uploads the current one again if it is gone)."
  default     = 30

  validation {
    condition     = var.source_retention_days >= 1 && floor(var.source_retention_days) == var.source_retention_days
    error_message = "source_retention_days must be a whole number >= 1."
  }
}

variable "image_retention_days" {
  type        = number
  description = "Days function images stay in gemq's Artifact Registry repository; the 5 newest are always kept."
  default     = 30

  validation {
    condition     = var.image_retention_days >= 1 && floor(var.image_retention_days) == var.image_retention_days
    error_message = "image_retention_days must be a whole number >= 1."
  }
}

variable "api_enablement_wait" {
  type        = string
  description = "How long to wait after enabling the APIs before creating resources that use them (time_sleep create_duration)."
  default     = "60s"

  validation {
    condition     = can(regex("^[0-9]+[sm]$", var.api_enablement_wait))
    error_message = "api_enablement_wait must be a duration such as 60s or 2m."
  }
}

variable "iam_propagation_wait" {
  type        = string
  description = "How long to wait after the IAM grants before creating the functions and subscriptions that rely on them (time_sleep create_duration; IAM changes take up to a couple of minutes to apply)."
  default     = "90s"

  validation {
    condition     = can(regex("^[0-9]+[sm]$", var.iam_propagation_wait))
    error_message = "iam_propagation_wait must be a duration such as 90s or 2m."
  }
}

variable "force_destroy_buckets" {
  type        = bool
  description = "Let `terraform destroy` delete the source and results buckets with their objects."
  default     = false
}

variable "monitoring" {
  description = <<-EOT
    Metrics, dashboard and alerts (README "Observability"). enabled: the worker exports its metrics
    over OTLP to Cloud Monitoring's Telemetry API (GEMQ_METRICS_EXPORT=otlp), and the dashboard and
    alert policies are created. notification_channels: ids of existing channels
    (projects/P/notificationChannels/N) the alerts notify; empty: the alerts only open incidents.
    rate_429_per_minute: 429s from Gemini per minute, over 5 minutes, that open an alert.
    redis_memory_ratio: Memorystore memory usage ratio that opens an alert (noeviction: a full Redis
    refuses writes). stall_minutes: how long tasks may wait for reserved slots with no task finishing.
  EOT
  type = object({
    enabled               = optional(bool, true)
    notification_channels = optional(list(string), [])
    rate_429_per_minute   = optional(number, 30)
    redis_memory_ratio    = optional(number, 0.8)
    stall_minutes         = optional(number, 15)
  })
  default = {}

  validation {
    condition     = alltrue([for c in var.monitoring.notification_channels : can(regex("^projects/[^/]+/notificationChannels/[^/]+$", c))])
    error_message = "monitoring.notification_channels: want ids like projects/PROJECT/notificationChannels/ID."
  }
  validation {
    condition     = var.monitoring.redis_memory_ratio > 0 && var.monitoring.redis_memory_ratio < 1 && var.monitoring.rate_429_per_minute > 0 && var.monitoring.stall_minutes >= 5
    error_message = "monitoring: redis_memory_ratio in (0, 1), rate_429_per_minute > 0, stall_minutes >= 5."
  }
}
