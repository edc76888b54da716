terraform {
  # 1.11: write-only arguments (secret_data_wo) and ephemeral variables.
  required_version = ">= 1.11"

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = ">= 6.50, < 7.0"
    }
    archive = {
      source  = "hashicorp/archive"
      version = ">= 2.7, < 3.0"
    }
    time = {
      source  = "hashicorp/time"
      version = ">= 0.13, < 1.0"
    }
  }

  # State holds the Redis AUTH string (an attribute of the Memorystore instance) and every
  # resource's identity: keep it in a Cloud Storage bucket only the deployers can read.
  # `terraform init -backend-config=backend.hcl` (copy backend.hcl.example) fills in the bucket.
  backend "gcs" {}
}

provider "google" {
  project = var.project_id
  region  = var.region
}
