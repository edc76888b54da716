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
  description = "Ingest function sizing: memory (e.g. 512Mi), CPU, request timeout, requests per instance, min/max instances, request body cap, ingress."
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
  description = "Gemini API key, used only when gemini_api_key_secret_id is null: Terraform then creates the secret and its first version (the key is stored in the Terraform state)."
  default     = null
  sensitive   = true
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
  description = "Attempts for transient Gemini failures before a task is dead-lettered (GEMQ_MAX_ATTEMPTS)."
  default     = 5
}

variable "result_ttl" {
  type        = string
  description = "How long results and task state stay in Redis (GEMQ_RESULT_TTL, a Go duration)."
  default     = "168h"
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
  description = "Pub/Sub push redelivery backoff (retry_policy) after the worker answers non-2xx (e.g. Redis unreachable)."
  default     = {}
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
}

variable "redis" {
  type = object({
    tier                    = optional(string, "BASIC")
    memory_size_gb          = optional(number, 1)
    auth_enabled            = optional(bool, true)
    transit_encryption_mode = optional(string, "SERVER_AUTHENTICATION")
  })
  description = "Memorystore for Redis 7: tier (BASIC or STANDARD_HA), size, AUTH, in-transit encryption (SERVER_AUTHENTICATION = TLS, or DISABLED). maxmemory-policy is always noeviction."
  default     = {}

  validation {
    condition     = contains(["BASIC", "STANDARD_HA"], var.redis.tier)
    error_message = "redis.tier must be BASIC or STANDARD_HA."
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
  description = "Name of the VPC network Memorystore and the Serverless VPC Access connector attach to."
  default     = "default"
}

variable "connector_cidr" {
  type        = string
  description = "Unused /28 range of the network for the Serverless VPC Access connector."
  default     = "10.8.0.0/28"

  validation {
    condition     = can(cidrhost(var.connector_cidr, 0)) && endswith(var.connector_cidr, "/28")
    error_message = "connector_cidr must be a /28 CIDR range."
  }
}

variable "connector" {
  type = object({
    machine_type  = optional(string, "e2-micro")
    min_instances = optional(number, 2)
    max_instances = optional(number, 3)
  })
  description = "Serverless VPC Access connector sizing."
  default     = {}
}

variable "results_to_storage" {
  type        = bool
  description = "Also write every result published on the results topic to a Cloud Storage bucket (a Cloud Storage subscription)."
  default     = false
}

variable "force_destroy_buckets" {
  type        = bool
  description = "Let `terraform destroy` delete the source and results buckets with their objects."
  default     = false
}
