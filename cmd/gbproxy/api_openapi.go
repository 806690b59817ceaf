package main

import (
	_ "embed"
	"net/http"
)

// openAPI describes the whole admin API; api_openapi_test.go checks real
// answers of every endpoint against it, so it cannot drift from the code.
//
//go:embed openapi.json
var openAPI []byte

func serveOpenAPI(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Write(openAPI)
}
