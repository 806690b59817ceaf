# gbproxy — see README.md. All targets work on a fresh Debian machine with Go.
GO        ?= go
BIN       := bin
FUZZTIME  ?= 20s
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
	$(GO) test -run '^$$' -bench . -benchmem ./security/ ./cascade/manscdp/ ./cascade/store/ ./b2bua/sdp/
# Relay: each figure beside the naive Go loop measured in the same run
# (about 75 s; -relay.window sets each throughput measurement, default 2s).
	$(GO) test -run '^$$' -bench . -benchtime 1x -timeout 10m ./relay/

# Each fuzz target runs FUZZTIME (go test allows one -fuzz target per run).
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzVerify$$' -fuzztime $(FUZZTIME) ./security/
	$(GO) test -run '^$$' -fuzz '^FuzzPeek$$' -fuzztime $(FUZZTIME) ./cascade/manscdp/
	$(GO) test -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime $(FUZZTIME) ./cascade/manscdp/
	$(GO) test -run '^$$' -fuzz '^FuzzRewrite$$' -fuzztime $(FUZZTIME) ./cascade/manscdp/
	$(GO) test -run '^$$' -fuzz '^FuzzParsePTZCmd$$' -fuzztime $(FUZZTIME) ./cascade/manscdp/
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME) ./b2bua/sdp/

lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (gofmt -l $$(git ls-files '*.go'); exit 1)
	$(GO) vet ./...

clean:
	rm -rf $(BIN)
