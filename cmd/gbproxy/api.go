package main

import (
	"encoding/json"
	"net/http"
	"time"
)

// deviceJSON and friends are the admin API contract: keep the field names.
type deviceJSON struct {
	ID            string     `json:"id"`
	Online        bool       `json:"online"`
	Transport     string     `json:"transport"`
	Remote        string     `json:"remote"`
	ExpiresAt     time.Time  `json:"expires_at"`
	LastKeepalive *time.Time `json:"last_keepalive"`
	RegisteredAt  time.Time  `json:"registered_at"`
	UserAgent     string     `json:"user_agent,omitempty"`
}

type channelJSON struct {
	ID       string `json:"id"`
	DeviceID string `json:"device_id"`
	Name     string `json:"name"`
	Status   string `json:"status"`
	ParentID string `json:"parent_id,omitempty"`
}

func (a *app) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		a.metrics.WritePrometheus(w)
	})
	mux.HandleFunc("GET /api/v1/devices", func(w http.ResponseWriter, r *http.Request) {
		devs := a.cascade.Registry().Devices()
		out := make([]deviceJSON, len(devs))
		for i, d := range devs {
			out[i] = deviceJSON{ID: d.ID, Online: d.Online, Transport: d.Transport, Remote: d.Remote,
				ExpiresAt: d.ExpiresAt, RegisteredAt: d.RegisteredAt, UserAgent: d.UserAgent}
			if !d.LastKeepalive.IsZero() {
				t := d.LastKeepalive
				out[i].LastKeepalive = &t
			}
		}
		writeJSON(w, out)
	})
	mux.HandleFunc("GET /api/v1/channels", func(w http.ResponseWriter, r *http.Request) {
		chans := a.cascade.Registry().Channels()
		out := make([]channelJSON, len(chans))
		for i, c := range chans {
			out[i] = channelJSON{ID: c.ID, DeviceID: c.DeviceID, Name: c.Item.Name, Status: c.Status, ParentID: c.Item.ParentID}
		}
		writeJSON(w, out)
	})
	mux.HandleFunc("GET /api/v1/platforms", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, a.cascade.Platforms())
	})
	return mux
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}
