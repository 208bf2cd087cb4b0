# The project's commands. Targets call scripts in infra/; nothing here needs to be installed by
# hand beyond Rust, Python 3 and (if no PostgreSQL is running) PostgreSQL's server binaries.
SHELL := /bin/bash
export CARGO_TARGET_DIR ?= $(HOME)/.cache/llm-stream/target
VENV := $(CURDIR)/.venv

.PHONY: deploy openapi dev test migrate replay key keys revoke local check-template load lambda-watch tools fmt lint pg-stop bench bench-functions bench-search bench-scale bench-history bench-stream bench-spend bench-responses bench-faults bench-resume bench-instructions screenshots

## make dev: find or start PostgreSQL, migrate, serve every route on :3000 (offline provider)
dev:
	@url="$$(infra/pg.sh dev)" && echo "DATABASE_URL=$$url" && \
	  DATABASE_URL="$$url" AUTH="$${AUTH:-off}" LOG_FORMAT="$${LOG_FORMAT:-pretty}" \
	  cargo run -p local --bin local -- serve

## make test: the whole suite against a real PostgreSQL (found or started the same way)
test:
	@infra/test.sh

## make migrate: apply pending migrations to $$DATABASE_URL (or the dev database)
migrate:
	@url="$$(infra/pg.sh dev)" && DATABASE_URL="$$url" cargo run -q -p local --bin local -- migrate

## make replay < log: put `unsaved_record` log lines back into the table
replay:
	@url="$$(infra/pg.sh dev)" && DATABASE_URL="$$url" cargo run -q -p local --bin local -- replay $(FILE)

## make key OWNER=alice [NAME=laptop]: create an API key (printed once); make revoke ID=<key id>
key:
	@url="$$(infra/pg.sh dev)" && DATABASE_URL="$$url" cargo run -q -p local --bin local -- key create "$(OWNER)" $(NAME) $(ARGS)

revoke:
	@url="$$(infra/pg.sh dev)" && DATABASE_URL="$$url" cargo run -q -p local --bin local -- key revoke "$(ID)"

## make keys: list the API keys (id, owner, name, created, revoked; never the keys themselves)
keys:
	@url="$$(infra/pg.sh dev)" && DATABASE_URL="$$url" cargo run -q -p local --bin local -- key list

## make local ARGS='purge --older-than 90 --dry-run': any `local` command on the dev database
## (purge, export OWNER, owner erase OWNER, key ..., replay FILE)
local:
	@url="$$(infra/pg.sh dev)" && DATABASE_URL="$$url" cargo run -q -p local --bin local -- $(ARGS)

## make lambda-watch: migrate, then the Lambda emulator on 127.0.0.1:9000 (HOST=0.0.0.0 to listen
## on every interface, as `make dev`); function URLs under /lambda-url/<function>/
lambda-watch: tools
	@url="$$(infra/pg.sh dev)" && DATABASE_URL="$$url" cargo run -q -p local --bin local -- migrate && \
	  PATH="$(VENV)/bin:$$PATH" cargo lambda watch -A "$${HOST:-127.0.0.1}" \
	  --env-var DATABASE_URL="$$url",AUTH="$${AUTH:-off}"

## make openapi: rewrite openapi.json from the code (a test fails when they differ)
openapi:
	@cargo run -q -p local --bin local -- openapi > openapi.json && echo "openapi.json written"

## make deploy: sam build (arm64 unless ARCH=x86_64) and sam deploy --guided; then invoke MigrateFunction
deploy:
	@infra/tools.sh sam && export PATH="$(VENV)/bin:$$PATH" && \
	  sam build --beta-features --parameter-overrides Architecture=$${ARCH:-arm64} && \
	  sam deploy --guided --parameter-overrides Architecture=$${ARCH:-arm64} $(PARAMS)

## make tools: the project-local Python venv with cargo-lambda
tools:
	@infra/tools.sh

# Release builds of every function, and of the stream function without the Bedrock SDK (the
# baseline of what that dependency costs).
RELEASE_BUILDS = cargo build -q --release -p stream --no-default-features && \
	  cp $(CARGO_TARGET_DIR)/release/stream $(CARGO_TARGET_DIR)/release/stream-without-bedrock && \
	  cargo build -q --release -p history -p get -p search -p stream -p migrate -p local -p bench

## make bench: the whole benchmark report (release builds; loads 1,000,000 rows once into llm_stream_bench),
## then the instruction count of bench-instructions
bench:
	@$(RELEASE_BUILDS) && \
	  TEST_DATABASE_URL="$$(infra/pg.sh admin)" METRICS=off $(CARGO_TARGET_DIR)/release/bench all $(CARGO_TARGET_DIR)/release && \
	  bench/instructions.sh

## make load: 200 concurrent streams + history/search traffic for 60 s (SECONDS=...) on loopback
load:
	@cargo build -q --release -p bench -p local && TEST_DATABASE_URL="$$(infra/pg.sh admin)" \
	  $(CARGO_TARGET_DIR)/release/bench load $(CARGO_TARGET_DIR)/release/local $(SECONDS)

## make bench-functions: cold start, idle memory and size of each function (and of stream without the Bedrock SDK)
bench-functions:
	@$(RELEASE_BUILDS) && TEST_DATABASE_URL="$$(infra/pg.sh admin)" \
	  $(CARGO_TARGET_DIR)/release/bench functions $(CARGO_TARGET_DIR)/release

bench-search:
	@cargo build -q --release -p bench && TEST_DATABASE_URL="$$(infra/pg.sh admin)" \
	  $(CARGO_TARGET_DIR)/release/bench search $(ROWS)

## make bench-scale [ROWS=10000000]: the reads at ROWS turns (default 1M) beside 1M, shaped like
## real chat; each size is loaded once into its own database (10M: about 75 GB of disk and 1M 7.5 GB more; about 2.5 h on 2 cores)
bench-scale:
	@cargo build -q --release -p bench && TEST_DATABASE_URL="$$(infra/pg.sh admin)" METRICS=off \
	  $(CARGO_TARGET_DIR)/release/bench scale $(ROWS)

bench-history:
	@cargo build -q --release -p bench && TEST_DATABASE_URL="$$(infra/pg.sh admin)" \
	  $(CARGO_TARGET_DIR)/release/bench history $(ROWS)

bench-faults:
	@cargo build -q --release -p bench -p local && TEST_DATABASE_URL="$$(infra/pg.sh admin)" METRICS=off \
	  $(CARGO_TARGET_DIR)/release/bench faults $(CARGO_TARGET_DIR)/release

bench-resume:
	@cargo build -q --release -p bench && TEST_DATABASE_URL="$$(infra/pg.sh admin)" METRICS=off \
	  $(CARGO_TARGET_DIR)/release/bench resume

bench-stream:
	@cargo build -q --release -p bench && TEST_DATABASE_URL="$$(infra/pg.sh admin)" METRICS=off \
	  $(CARGO_TARGET_DIR)/release/bench stream

## make bench-instructions: instructions per streamed /v1 call, plain and with tools (callgrind: no timing noise)
bench-instructions:
	@cargo build -q --release -p local && bench/instructions.sh

## make bench-responses: /v1/responses beside /v1/chat/completions, streamed
bench-responses:
	@cargo build -q --release -p bench && TEST_DATABASE_URL="$$(infra/pg.sh admin)" METRICS=off \
	  $(CARGO_TARGET_DIR)/release/bench responses

## make bench-spend: a key with limits beside a key without, and the reservation statement alone
bench-spend:
	@cargo build -q --release -p bench && TEST_DATABASE_URL="$$(infra/pg.sh admin)" METRICS=off \
	  $(CARGO_TARGET_DIR)/release/bench spend

## make screenshots: the README's playground screenshots (docs/img), taken by the browser test
screenshots:
	@PLAYGROUND_SCREENSHOTS="$(CURDIR)/docs/img" infra/test.sh -E 'test(a_person_chats)'

## make check-template: cfn-lint, sam validate --lint, sam build (x86_64), all offline
check-template:
	@infra/check-template.sh

fmt:
	cargo fmt --all

lint:
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings

pg-stop:
	@infra/pg.sh stop
