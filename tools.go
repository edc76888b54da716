//go:build tools

// This file pins modules that gemq's packages are being built against, so
// `go mod tidy` keeps them while the code that imports them lands.
package gemq

import (
	_ "cloud.google.com/go/cloudtasks/apiv2"
	_ "cloud.google.com/go/pubsub/v2"
	_ "cloud.google.com/go/pubsub/v2/pstest"
	_ "github.com/GoogleCloudPlatform/functions-framework-go/funcframework"
	_ "github.com/go-redis/redis_rate/v10"
	_ "github.com/google/go-cmp/cmp"
	_ "github.com/hashicorp/terraform-plugin-sdk/v2/plugin"
	_ "google.golang.org/api/idtoken"
	_ "google.golang.org/genai"
)
