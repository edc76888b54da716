# Deferred tasks: the worker schedules a named Cloud Task for the moment its permit is reserved;
# the queue posts it back to the worker with an OIDC token of the tasks invoker account.
resource "google_cloud_tasks_queue" "deferred" {
  name     = "${var.name_prefix}-deferred"
  location = var.region

  rate_limits {
    max_dispatches_per_second = var.tasks_queue.max_dispatches_per_second
    max_concurrent_dispatches = var.tasks_queue.max_concurrent_dispatches
  }

  retry_config {
    max_attempts  = var.tasks_queue.max_attempts
    min_backoff   = var.tasks_queue.min_backoff
    max_backoff   = var.tasks_queue.max_backoff
    max_doublings = var.tasks_queue.max_doublings
  }

  stackdriver_logging_config {
    sampling_ratio = 0.1
  }

  depends_on = [time_sleep.apis_ready]
}
