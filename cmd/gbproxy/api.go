package main

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/gbproxy/gbproxy/b2bua"
	"github.com/gbproxy/gbproxy/cascade"
	"github.com/gbproxy/gbproxy/configs"
	"github.com/gbproxy/gbproxy/directory"
)

// deviceJSON and friends are the admin API contract: keep the field names.
type deviceJSON struct {
	ID     string `json:"id"`
	Online bool   `json:"online"`
	// Transport, Remote, ExpiresAt and RegisteredAt are always set for a
	// device of this node, absent for another node's.
	Transport     string     `json:"transport,omitzero"`
	Remote        string     `json:"remote,omitzero"`
	ExpiresAt     time.Time  `json:"expires_at,omitzero"`
	LastKeepalive *time.Time `json:"last_keepalive"`
	RegisteredAt  time.Time  `json:"registered_at,omitzero"`
	UserAgent     string     `json:"user_agent,omitempty"`
	GBVersion     string     `json:"gb_version,omitempty"`
	// Config is its lower.devices entry, without secrets, when it has one.
	Config map[string]any `json:"config,omitempty"`
	// Node is the cluster node holding the device (absent on a single
	// node); another node's device has only id, node and online.
	Node string `json:"node,omitempty"`
}

type channelJSON struct {
	ID       string `json:"id"`
	DeviceID string `json:"device_id"`
	Name     string `json:"name"`
	Status   string `json:"status"`
	ParentID string `json:"parent_id,omitempty"`
	// CivilCode and BusinessGroupID place the channel in the catalog tree
	// (the console groups by them).
	CivilCode       string `json:"civil_code,omitempty"`
	BusinessGroupID string `json:"business_group_id,omitempty"`
	// LocalID is the channel's own ID when the list is seen through an
	// upper platform (?platform=) that knows it under another.
	LocalID string `json:"local_id,omitempty"`
	// SharedTo maps each upper platform that sees the channel to the ID it
	// sees; absent when no upper sees it.
	SharedTo map[string]string `json:"shared_to,omitempty"`
	Node     string            `json:"node,omitempty"` // the cluster node holding its device
}

func (a *app) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		_ = a.metrics.WritePrometheus(w) // fails only when the client went away
	})
	mux.HandleFunc("GET /api/v1/devices", a.listDevices)
	mux.HandleFunc("GET /api/v1/devices/{id}", a.getDevice)
	mux.HandleFunc("GET /api/v1/channels", a.listChannels)
	mux.HandleFunc("GET /api/v1/channels/{id}", a.getChannel)
	mux.HandleFunc("GET /api/v1/openapi.json", serveOpenAPI)
	mux.HandleFunc("GET /api/v1/cluster", a.getCluster)
	a.manageRoutes(mux)
	mux.HandleFunc("PUT /api/v1/platforms/{id}/share", func(w http.ResponseWriter, r *http.Request) {
		var share configs.ShareConfig
		dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&share); err != nil {
			http.Error(w, "share: "+err.Error(), http.StatusBadRequest)
			return
		}
		a.setShare(w, r.PathValue("id"), &share)
	})
	mux.HandleFunc("DELETE /api/v1/platforms/{id}/share", func(w http.ResponseWriter, r *http.Request) {
		a.setShare(w, r.PathValue("id"), nil)
	})
	mux.HandleFunc("GET /api/v1/sessions", a.listSessions)
	mux.HandleFunc("DELETE /api/v1/sessions/{call_id}", func(w http.ResponseWriter, r *http.Request) {
		switch err := a.b2bua.Hangup(r.PathValue("call_id")); {
		case errors.Is(err, b2bua.ErrNoSession):
			http.Error(w, err.Error(), http.StatusNotFound)
		case err != nil:
			http.Error(w, err.Error(), http.StatusInternalServerError)
		default:
			w.WriteHeader(http.StatusNoContent)
		}
	})
	mux.HandleFunc("GET /api/v1/subscriptions", func(w http.ResponseWriter, r *http.Request) {
		upper, lower := a.cascade.Subscriptions()
		writeJSON(w, map[string]any{"upper": upper, "lower": lower})
	})
	mux.HandleFunc("GET /api/v1/store/backup", a.storeBackup)
	return withConsole(requireToken(a.cfg.HTTP.Token, mux))
}

// requireToken answers 401 to requests without `Authorization: Bearer
// <token>` (compared in constant time); /healthz stays open for load
// balancers. An empty token leaves the API open (loopback only: the config
// refuses an empty token elsewhere).
func requireToken(token string, next http.Handler) http.Handler {
	if token == "" {
		return next
	}
	want := []byte(token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if r.URL.Path != "/healthz" && (!ok || subtle.ConstantTimeCompare([]byte(strings.TrimSpace(got)), want) != 1) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="gbproxy"`)
			http.Error(w, "401 unauthorized: send the http.token of the config as Authorization: Bearer <token>", http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// setShare applies sharing for one platform (nil: back to the config file)
// and answers with the platform's new state.
func (a *app) setShare(w http.ResponseWriter, id string, share *configs.ShareConfig) {
	switch err := a.cascade.SetShare(id, share); {
	case errors.Is(err, directory.ErrUnknownPlatform):
		http.Error(w, "no upper platform "+id+" in upper.platforms", http.StatusNotFound)
		return
	case errors.Is(err, cascade.ErrClosed), errors.Is(err, cascade.ErrClusterDown):
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	case err != nil:
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	a.writePlatform(w, http.StatusOK, id)
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v) // fails only when the client went away: the values are ours
}
