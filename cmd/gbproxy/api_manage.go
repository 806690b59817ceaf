package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/gbproxy/gbproxy/cascade"
	"github.com/gbproxy/gbproxy/configs"
	"github.com/gbproxy/gbproxy/directory"
)

// The management API: upper platforms and allowed devices added, changed
// and removed at run time. Bodies carry the config file's keys; answers
// carry them too, without secrets.

// platformJSON is an upper platform's state with its settings.
type platformJSON struct {
	cascade.PlatformState
	Config map[string]any `json:"config"`
}

// secretKeys are never shown; "<key>_set" says whether one is.
var secretKeys = []string{"password", "password_ha1", "note_seed"}

// withoutSecrets is an entry with the config file's keys, its secrets
// replaced by password_set (a password or HA1 is set) and note_seed_set.
func withoutSecrets(entry any) map[string]any {
	m := configs.EntryMap(entry)
	m["password_set"] = m["password"] != "" || m["password_ha1"] != ""
	m["note_seed_set"] = m["note_seed"] != ""
	for _, k := range secretKeys {
		delete(m, k)
	}
	return m
}

func (a *app) manageRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /api/v1/platforms", func(w http.ResponseWriter, r *http.Request) {
		states := a.cascade.Platforms()
		out := make([]platformJSON, 0, len(states))
		for _, st := range states {
			if p, ok := a.cascade.PlatformConfig(st.ID); ok { // not removed meanwhile
				out = append(out, platformJSON{st, withoutSecrets(p)})
			}
		}
		writeJSON(w, out)
	})
	mux.HandleFunc("GET /api/v1/platforms/{id}", func(w http.ResponseWriter, r *http.Request) {
		a.writePlatform(w, http.StatusOK, r.PathValue("id"))
	})
	mux.HandleFunc("POST /api/v1/platforms", a.addPlatform)
	mux.HandleFunc("PUT /api/v1/platforms/{id}", a.updatePlatform)
	mux.HandleFunc("DELETE /api/v1/platforms/{id}", func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		if err := a.cascade.RemovePlatform(r.Context(), id); err != nil {
			manageError(w, err, "upper platform", id)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})

	mux.HandleFunc("GET /api/v1/devices/allowed", func(w http.ResponseWriter, r *http.Request) {
		list := a.cascade.AllowedDevices()
		out := make([]map[string]any, len(list))
		for i, d := range list {
			out[i] = withoutSecrets(d)
		}
		writeJSON(w, out)
	})
	mux.HandleFunc("POST /api/v1/devices", a.addDevice)
	mux.HandleFunc("PUT /api/v1/devices/{id}", a.updateDevice)
	mux.HandleFunc("DELETE /api/v1/devices/{id}", func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		if err := a.cascade.RemoveDevice(id); err != nil {
			manageError(w, err, "device", id)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
}

// writePlatform answers with one platform's state and settings.
func (a *app) writePlatform(w http.ResponseWriter, status int, id string) {
	p, ok := a.cascade.PlatformConfig(id)
	if !ok {
		http.Error(w, "no upper platform "+id, http.StatusNotFound)
		return
	}
	for _, st := range a.cascade.Platforms() {
		if st.ID == id {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(status)
			writeJSON(w, platformJSON{st, withoutSecrets(p)})
			return
		}
	}
	http.Error(w, "no upper platform "+id, http.StatusNotFound)
}

func (a *app) addPlatform(w http.ResponseWriter, r *http.Request) {
	raw, ok := readEntry(w, r)
	if !ok {
		return
	}
	p, err := a.cfg.ParsePlatform(raw)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if err := a.cascade.AddPlatform(p); err != nil {
		manageError(w, err, "upper platform", p.ID)
		return
	}
	a.writePlatform(w, http.StatusCreated, p.ID)
}

func (a *app) updatePlatform(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	raw, ok := readEntry(w, r)
	if !ok {
		return
	}
	old, known := a.cascade.PlatformConfig(id)
	if !known {
		http.Error(w, "no upper platform "+id, http.StatusNotFound)
		return
	}
	if !samePathID(w, raw, id) {
		return
	}
	keepOmitted(raw, configs.EntryMap(old), "share")
	p, err := a.cfg.ParsePlatform(raw)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if err := a.cascade.UpdatePlatform(r.Context(), p); err != nil {
		manageError(w, err, "upper platform", id)
		return
	}
	a.writePlatform(w, http.StatusOK, id)
}

func (a *app) addDevice(w http.ResponseWriter, r *http.Request) {
	raw, ok := readEntry(w, r)
	if !ok {
		return
	}
	d, err := a.cfg.ParseDevice(raw)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if err := a.cascade.AddDevice(d); err != nil {
		manageError(w, err, "device", d.ID)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	writeJSON(w, withoutSecrets(d))
}

func (a *app) updateDevice(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	raw, ok := readEntry(w, r)
	if !ok {
		return
	}
	old, known := a.cascade.AllowedDevice(id)
	if !known {
		http.Error(w, "no device "+id+" in the allowed list", http.StatusNotFound)
		return
	}
	if !samePathID(w, raw, id) {
		return
	}
	keepOmitted(raw, configs.EntryMap(old))
	d, err := a.cfg.ParseDevice(raw)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if err := a.cascade.UpdateDevice(d); err != nil {
		manageError(w, err, "device", id)
		return
	}
	writeJSON(w, withoutSecrets(d))
}

// readEntry reads a JSON object body; numbers stay exact (json.Number),
// as a long ID sent unquoted must not lose digits.
func readEntry(w http.ResponseWriter, r *http.Request) (map[string]any, bool) {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20))
	dec.UseNumber()
	var raw map[string]any
	if err := dec.Decode(&raw); err != nil || raw == nil {
		if err == nil {
			err = errors.New("want a JSON object")
		}
		http.Error(w, "body: "+err.Error(), http.StatusBadRequest)
		return nil, false
	}
	// What a GET shows in place of the secrets may come back from a form.
	delete(raw, "password_set")
	delete(raw, "note_seed_set")
	return raw, true
}

// samePathID puts the path's ID in the body, which may omit it but not
// name another.
func samePathID(w http.ResponseWriter, raw map[string]any, id string) bool {
	if got, ok := raw["id"]; ok && fmt.Sprint(got) != id {
		http.Error(w, "id: "+strconv.Quote(fmt.Sprint(got))+" is not the "+id+" of the path", http.StatusBadRequest)
		return false
	}
	raw["id"] = id
	return true
}

// keepOmitted fills what a PUT body leaves out and a form cannot resend
// from the running entry: the secrets (password and password_ha1 go
// together) and the other keys named.
func keepOmitted(raw, old map[string]any, keys ...string) {
	_, pw := raw["password"]
	_, ha1 := raw["password_ha1"]
	if !pw && !ha1 {
		raw["password"], raw["password_ha1"] = old["password"], old["password_ha1"]
	}
	for _, k := range append(keys, "note_seed") {
		if _, ok := raw[k]; !ok {
			raw[k] = old[k]
		}
	}
}

// manageError answers a management function's error.
func manageError(w http.ResponseWriter, err error, what, id string) {
	switch {
	case errors.Is(err, directory.ErrUnknownPlatform), errors.Is(err, cascade.ErrUnknownDevice):
		http.Error(w, "no "+what+" "+id, http.StatusNotFound)
	case errors.Is(err, cascade.ErrExists):
		http.Error(w, "id: "+what+" "+id+" already exists; PUT changes it", http.StatusConflict)
	case errors.Is(err, cascade.ErrClosed), errors.Is(err, cascade.ErrClusterDown):
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
	default: // what the cascade found wrong with valid settings (a TLS file)
		http.Error(w, err.Error(), http.StatusBadRequest)
	}
}
