//go:build tools

// This file pins modules that gemq's packages are being built against, so
// `go mod tidy` keeps them while the code that imports them lands.
package gemq

import (
	_ "github.com/go-redis/redis_rate/v10"
)
