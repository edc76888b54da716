# The function source archive: built from the repository with the files source-bundle.txt
# selects, named after its hash so that any code change uploads a new object and redeploys both
# functions.

locals {
  source_root = coalesce(var.source_dir, abspath("${path.module}/.."))
  bundle_rules = [
    for line in split("\n", file("${path.module}/source-bundle.txt")) : trimspace(line)
    if trimspace(line) != "" && !startswith(trimspace(line), "#")
  ]
  bundle_files = sort(setsubtract(
    flatten([for r in local.bundle_rules : tolist(fileset(local.source_root, substr(r, 1, -1))) if startswith(r, "+")]),
    flatten([for r in local.bundle_rules : tolist(fileset(local.source_root, substr(r, 1, -1))) if startswith(r, "-")]),
  ))
}

data "archive_file" "source" {
  type        = "zip"
  output_path = "${path.module}/build/gemq-source.zip"

  dynamic "source" {
    for_each = local.bundle_files
    content {
      filename = source.value
      content  = file("${local.source_root}/${source.value}")
    }
  }
}

resource "google_storage_bucket" "source" {
  name                        = "${var.project_id}-${var.name_prefix}-source"
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = var.force_destroy_buckets
  labels                      = var.labels

  # Every code change uploads a new archive; old ones are only history. Deleting the current
  # one is harmless too: Terraform sees it gone on the next refresh and uploads it again before
  # any rebuild that needs it.
  lifecycle_rule {
    condition {
      age = var.source_retention_days
    }
    action {
      type = "Delete"
    }
  }

  depends_on = [time_sleep.apis_ready]
}

resource "google_storage_bucket_object" "source" {
  name   = "${var.name_prefix}-source-${data.archive_file.source.output_md5}.zip"
  bucket = google_storage_bucket.source.name
  source = data.archive_file.source.output_path

  lifecycle {
    precondition {
      condition     = alltrue([for r in local.bundle_rules : can(regex("^[+-]", r))])
      error_message = "Every rule in source-bundle.txt must start with + or -."
    }
    precondition {
      condition     = contains(local.bundle_files, "go.mod") && contains(local.bundle_files, "go.sum")
      error_message = "The source archive must hold go.mod and go.sum: is source_dir the repository root?"
    }
  }
}
