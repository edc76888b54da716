# gemq — the one place commands live. `make test` is what CI runs.
GO ?= go
GOFLAGS_TEST ?= -race -count=1 -timeout 30m

.PHONY: test vet fmt-check unit bench-limiter

## test: everything CI checks (formatting, vet, all tests with the race detector)
test: fmt-check vet unit

fmt-check:
	@out=$$(gofmt -l .); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

unit:
	CI=$${CI:-} $(GO) test $(GOFLAGS_TEST) ./...
