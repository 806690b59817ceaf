# gbproxy — see README.md. All targets work on a fresh Debian machine with Go.
GO        ?= go
BIN       := bin
FUZZTIME  ?= 20s
# golangci-lint v2 (.golangci.yml); .ci/run installs it into GOPATH/bin.
GOLANGCI_LINT_VERSION := v2.15.0
GOLANGCI_LINT ?= $(shell command -v golangci-lint 2>/dev/null || echo "$$($(GO) env GOPATH)/bin/golangci-lint")
# Race detector on in CI (the default); `make test RACE=` skips it.
RACE      ?= -race

.PHONY: build run test bench fuzz lint clean

build:
	$(GO) build -o $(BIN)/gbproxy ./cmd/gbproxy
	$(GO) build -o $(BIN)/gbsim ./cmd/gbsim

# Starts the proxy on the embedded default config; the store goes to ./data.
run: build
	mkdir -p data
	./$(BIN)/gbproxy

test:
	$(GO) vet ./...
	$(GO) test $(RACE) -count=1 -timeout 8m ./...

bench:
	$(GO) test -run '^$$' -bench . -benchtime 1x -timeout 20m ./cmd/gbproxy/
	$(GO) test -run '^$$' -bench . -benchmem ./security/ ./cascade/ ./endpoint/ ./cascade/manscdp/ ./store/ ./b2bua/sdp/ ./cmd/gbsim/gbnote/
# etcd writes per device claim, one at a time and in a burst (needs etcd).
	$(GO) test -run '^$$' -bench ClaimDevice -benchtime 2000x ./cluster/
# Relay: each figure beside the naive Go loop measured in the same run
# (about 75 s; -relay.window sets each throughput measurement, default 2s).
	$(GO) test -run '^$$' -bench . -benchtime 1x -timeout 10m ./relay/

# Every fuzz target in the repository, as package:Target. `make lint` fails
# when a Fuzz function is missing here. Each runs FUZZTIME (go test allows
# one -fuzz target per run).
FUZZ_TARGETS := \
	./security:FuzzVerify \
	./security:FuzzParseNote \
	./security:FuzzNoteVerify \
	./security:FuzzParseIdentity \
	./cascade/manscdp:FuzzPeek \
	./cascade/manscdp:FuzzDecode \
	./cascade/manscdp:FuzzRewrite \
	./cascade/manscdp:FuzzParsePTZCmd \
	./b2bua/sdp:FuzzParse \
	./relay:FuzzRTPInput \
	./relay:FuzzPSKeyStart \
	./endpoint:FuzzFilterDatagram \
	./cluster:FuzzParseSignature \
	./cmd/gbsim/load:FuzzScan \
	./cmd/gbproxy:FuzzParseList \
	./cmd/gbsim/gbnote:FuzzParseNote \
	./cmd/gbsim/sim:FuzzBodyDecoding \
	./cmd/gbsim/sim:FuzzParseMANSRTSP

fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
	  echo "== $$t"; \
	  $(GO) test -run '^$$' -fuzz "^$${t##*:}\$$" -fuzztime $(FUZZTIME) "$${t%%:*}/"; \
	done

lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (gofmt -l $$(git ls-files '*.go'); exit 1)
	$(GO) vet ./...
	@missing=$$(git grep -o '^func Fuzz[A-Za-z0-9_]*' -- '*_test.go' | \
	  sed -E 's|^(.*)/[^/]*:func (Fuzz.*)$$|./\1:\2|' | \
	  while read t; do case " $(FUZZ_TARGETS) " in *" $$t "*) ;; *) echo "$$t";; esac; done); \
	  test -z "$$missing" || { echo "fuzz targets missing from FUZZ_TARGETS in the Makefile: $$missing"; exit 1; }
	@test -x "$(GOLANGCI_LINT)" || { echo "golangci-lint is missing: go install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION)"; exit 1; }
	$(GOLANGCI_LINT) run ./...

clean:
	rm -rf $(BIN)
