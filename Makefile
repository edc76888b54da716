# gemq — the one place commands live. `make test` is what CI runs.
GO ?= go
GOFLAGS_TEST ?= -race -count=1 -timeout 30m

.PHONY: test vet fmt-check unit bench-limiter bench run chaos chaos-short

## test: everything CI checks (formatting, vet, all tests with the race detector, then the short form
## of the fault-injection suite on its own, so that its load does not meet the timing-sensitive tests)
test: fmt-check vet tf-fmt unit chaos-short

fmt-check:
	@out=$$(gofmt -l .); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

unit:
	CI=$${CI:-} $(GO) test $(GOFLAGS_TEST) $$($(GO) list ./... | grep -v '/infra/chaos$$')

## chaos-short: the scenarios of the fault-injection suite that pass on main (infra/chaos Short, ~3.5 minutes)
chaos-short:
	CI=$${CI:-} $(GO) test $(GOFLAGS_TEST) ./infra/chaos

.PHONY: tf-check tf-fmt tf-schema

## tf-check: terraform fmt, then init/validate/plan offline against the stand-in provider,
## the JSON-plan assertions and the deploy-bundle build (infra/tfcheck); fails when terraform is missing
tf-check: tf-fmt
	CI=$${CI:-} $(GO) test -count=1 -timeout 10m ./infra/tfcheck

# `make test` runs infra/tfcheck inside `unit` (./...), so it only adds the fmt check.
tf-fmt:
	terraform fmt -check -recursive -diff terraform

## tf-schema: re-extract the provider schemas the stand-in serves from cdktf's generated code
## (needs npm; edit infra/tfprovider/schema/*.types to serve more resource types)
tf-schema:
	d=$$(mktemp -d) && cd $$d && npm init -y >/dev/null && \
	npm install --no-audit --no-fund --ignore-scripts @cdktf/provider-google@16.12.1 @cdktf/provider-archive@11.0.1 @cdktf/provider-time@11.0.1 >/dev/null && \
	cd $(CURDIR)/infra/tfprovider/schema && \
	node extract.js $$d/node_modules @cdktf/provider-google google.types google.json && \
	node extract.js $$d/node_modules @cdktf/provider-archive archive.types archive.json && \
	node extract.js $$d/node_modules @cdktf/provider-time time.types time.json && \
	rm -rf $$d

## bench-limiter: gemq's 3-dimension Acquire vs redis_rate AllowN vs EVALSHA no-op, 1/16/64/256 callers, and the
## worker's metrics on vs off, paired (BENCHMARKS.md, "Metrics overhead")
bench-limiter:
	$(GO) run ./cmd/benchlimiter

## run: the example job (examples/prompts.jsonl) on a local stack: Redis, Pub/Sub (pstest) with a push loop,
## the Cloud Tasks emulator, the Gemini stand-in and both functions served by the functions framework; shows
## progress, writes results.jsonl and prints a summary. GEMINI_API_KEY=... uses the real Gemini API instead.
## More flags: make run RUN_ARGS="--rpm 200 --minute 5s" (see bin/gemq run --help).
## It builds bin/gemq and runs that, not `go run`, which would turn gemq's exit code into 1: make
## then reports it as "Error N" (and exits 2 itself).
run:
	$(GO) build -o bin/gemq ./cmd/gemq
	./bin/gemq run $(RUN_ARGS)

## chaos: the fault-injection suite (infra/chaos): every scenario against the worker as a separate process,
## real redis-server, pstest, the Cloud Tasks emulator and the Gemini stand-in; prints the table RELIABILITY.md
## holds and exits non-zero when a scenario misses a target (about 12 minutes). Its short form (the scenarios
## passing on main, infra/chaos TestShort) runs inside `make test`. More: make chaos CHAOS_ARGS="-run redis -logs DIR".
chaos:
	$(GO) run ./infra/chaos/cmd/gemqchaos $(CHAOS_ARGS)

## bench: the pipeline benchmarks (quota utilisation, 429s and waste, invocations, gemq vs the seed's
## policy, overheads) through the local stack, and the limiter under 1,000 simulated instances; prints a
## table and writes the same figures into BENCHMARKS.md (infra/bench, infra/cmd/gemqbench). Not part of test.
bench:
	$(GO) build -o $${TMPDIR:-/tmp}/gemqbench ./infra/cmd/gemqbench && $${TMPDIR:-/tmp}/gemqbench -md BENCHMARKS.md
