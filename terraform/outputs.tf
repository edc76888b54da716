output "ingest_url" {
  description = "URL of the ingest function: POST $ingest_url/v1/jobs with an ID token (see README)."
  value       = google_cloudfunctions2_function.ingest.service_config[0].uri
}

output "worker_url" {
  description = "URL of the worker function (called only by Pub/Sub push and Cloud Tasks)."
  value       = local.worker_url
}

output "tasks_topic" {
  description = "Pub/Sub topic of task messages; users may publish envelopes to it directly."
  value       = google_pubsub_topic.tasks.name
}

output "results_topic" {
  description = "Pub/Sub topic every finished task's result is published to."
  value       = google_pubsub_topic.results.name
}

output "dead_letter_topic" {
  description = "Pub/Sub topic of task messages the worker could not take after push_max_delivery_attempts."
  value       = google_pubsub_topic.dead_letter.name
}

output "dead_letter_subscription" {
  description = "Pull subscription holding dead-lettered task messages for inspection."
  value       = google_pubsub_subscription.dead_letter.name
}

output "tasks_queue" {
  description = "Cloud Tasks queue path of deferred tasks (GEMQ_TASKS_QUEUE)."
  value       = local.queue_path
}

output "results_bucket" {
  description = "Bucket the Cloud Storage subscription writes every result to, as JSONL files under results/ (null when results_to_storage is false)."
  value       = one(google_storage_bucket.results[*].name)
}

output "network" {
  description = "VPC network Memorystore and the connector's subnet are attached to (created by Terraform unless var.network names one)."
  value       = local.network_name
}

output "artifact_repository" {
  description = "Artifact Registry repository holding the function images (cleanup policy: image_retention_days, 5 newest kept)."
  value       = google_artifact_registry_repository.functions.id
}

output "source_object" {
  description = "Source archive object, named after its MD5: a new name means a new build of both functions."
  value       = google_storage_bucket_object.source.name
}

output "service_accounts" {
  description = "Emails of gemq's service accounts."
  value = {
    ingest        = google_service_account.ingest.email
    worker        = google_service_account.worker.email
    push          = google_service_account.push.email
    tasks_invoker = google_service_account.tasks_invoker.email
    build         = google_service_account.build.email
  }
}

output "environment_variable_names" {
  description = "Names of the plain environment variables each function gets (secrets come as secret environment variables instead)."
  value = {
    ingest = sort(keys(local.ingest_env))
    worker = sort(keys(local.worker_env))
  }
}

output "secret_environment_variable_names" {
  description = "Names of the environment variables each function reads from Secret Manager."
  value = {
    ingest = [for s in local.redis_secret_env : s.key]
    worker = [for s in concat(local.redis_secret_env, local.gemini_secret_env) : s.key]
  }
}
