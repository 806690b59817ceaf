package main

import (
	"embed"
	"net/http"
)

// The web console: static files embedded in the binary (no CDN, works
// offline). They hold no data, so they are served without the API token;
// every data call the page makes goes through the API and its token.
//
//go:embed console
var consoleFiles embed.FS

// consoleCSP keeps anything a hostile device name might smuggle into the
// page from running: scripts and styles only from our own files.
const consoleCSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"

// withConsole serves the console at / and /console/*, everything else by api.
func withConsole(api http.Handler) http.Handler {
	files := http.FileServerFS(consoleFiles)
	mux := http.NewServeMux()
	mux.Handle("/", api)
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		consoleHeaders(w)
		http.ServeFileFS(w, r, consoleFiles, "console/index.html")
	})
	for _, name := range []string{"app.js", "app.css"} {
		mux.HandleFunc("GET /console/"+name, func(w http.ResponseWriter, r *http.Request) {
			consoleHeaders(w)
			files.ServeHTTP(w, r)
		})
	}
	return mux
}

func consoleHeaders(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Content-Security-Policy", consoleCSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	// The files change with the binary and carry no modification time.
	h.Set("Cache-Control", "no-cache")
}
