package main

import (
	"cmp"
	"encoding/base64"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/gbproxy/gbproxy/b2bua"
	"github.com/gbproxy/gbproxy/cascade"
	"github.com/gbproxy/gbproxy/directory"
)

// Lists page with ?limit=&cursor= and filters; the body stays the JSON array
// it always was, X-Total-Count counts every match and Link names the next
// page. Without limit the whole list comes back, as before paging existed.

// maxLimit bounds one page: a client wanting everything omits limit.
const maxLimit = 1000

// listParams is a list request's query, checked against what the list takes.
type listParams struct {
	limit  int
	cursor string // decoded; "" for the first page
	has    bool   // a cursor was given
	get    func(string) string
}

// paramError is a 400 naming the query parameter at fault.
type paramError struct{ name, why string }

func (e *paramError) Error() string { return e.name + ": " + e.why }

// parseList checks the query of a list (paged) or of one item (!paged:
// filters only).
func parseList(r *http.Request, paged bool, filters ...string) (listParams, error) {
	q := r.URL.Query()
	if paged {
		filters = append([]string{"limit", "cursor"}, filters...)
	}
	for name := range q {
		if !slices.Contains(filters, name) {
			return listParams{}, &paramError{strconv.Quote(name), "unknown parameter; this takes only " + cmp.Or(strings.Join(filters, ", "), "none")}
		}
	}
	p := listParams{get: q.Get}
	if s := q.Get("limit"); q.Has("limit") {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > maxLimit {
			return p, &paramError{"limit", "want an integer from 1 to " + strconv.Itoa(maxLimit) + ", got " + strconv.Quote(s) + " (omit it for the whole list)"}
		}
		p.limit = n
	}
	if q.Has("cursor") {
		b, err := base64.RawURLEncoding.DecodeString(q.Get("cursor"))
		if err != nil || len(b) == 0 {
			return p, &paramError{"cursor", "not a cursor from this list's Link header; start again without it"}
		}
		p.cursor, p.has = string(b), true
	}
	return p, nil
}

// writePage answers one page: the total in X-Total-Count and, when more
// follow, a Link to the next page that keeps the request's filters.
func writePage(w http.ResponseWriter, r *http.Request, items any, total int, next string, more bool) {
	w.Header().Set("X-Total-Count", strconv.Itoa(total))
	if more {
		q := r.URL.Query()
		q.Set("cursor", base64.RawURLEncoding.EncodeToString([]byte(next)))
		w.Header().Set("Link", "<"+r.URL.Path+"?"+q.Encode()+`>; rel="next"`)
	}
	writeJSON(w, items)
}

// badRequest answers 400 for a paramError or an unknown platform filter.
func badRequest(w http.ResponseWriter, err error, platform string) {
	if errors.Is(err, directory.ErrUnknownPlatform) {
		err = &paramError{"platform", "no upper platform " + strconv.Quote(platform) + " in upper.platforms"}
	}
	http.Error(w, err.Error(), http.StatusBadRequest)
}

func (a *app) listDevices(w http.ResponseWriter, r *http.Request) {
	p, err := parseList(r, true, "status", "q", "platform")
	if err != nil {
		badRequest(w, err, "")
		return
	}
	f := cascade.DeviceFilter{Q: p.get("q"), Platform: p.get("platform")}
	switch s := p.get("status"); s {
	case "":
	case "online", "offline":
		online := s == "online"
		f.Online = &online
	default:
		badRequest(w, &paramError{"status", "want online or offline, got " + strconv.Quote(s)}, "")
		return
	}
	if a.cluster != nil && f.Platform == "" {
		all, err := a.nodeDevices(f)
		if err != nil {
			badRequest(w, err, "")
			return
		}
		page, next, more := pageOf(all, func(d deviceJSON) string { return d.ID }, p.cursor, p.has, p.limit)
		writePage(w, r, page, len(all), next, more)
		return
	}
	page := cascade.Page[string]{Limit: p.limit}
	if p.has {
		page.After = &p.cursor
	}
	devs, total, next, err := a.cascade.DevicePage(f, page)
	if err != nil {
		badRequest(w, err, f.Platform)
		return
	}
	out := make([]deviceJSON, len(devs))
	for i, d := range devs {
		out[i] = a.toDeviceJSON(d)
	}
	var cursor string
	if next != nil {
		cursor = *next
	}
	writePage(w, r, out, total, cursor, next != nil)
}

func (a *app) getDevice(w http.ResponseWriter, r *http.Request) {
	if _, err := parseList(r, false); err != nil {
		badRequest(w, err, "")
		return
	}
	id := r.PathValue("id")
	d, ok := a.cascade.Registry().Device(id)
	if !ok {
		http.Error(w, "no device "+strconv.Quote(id)+" has registered", http.StatusNotFound)
		return
	}
	writeJSON(w, a.toDeviceJSON(d))
}

func (a *app) toDeviceJSON(d cascade.Device) deviceJSON {
	out := deviceJSON{ID: d.ID, Online: d.Online, Transport: d.Transport, Remote: d.Remote,
		ExpiresAt: d.ExpiresAt, RegisteredAt: d.RegisteredAt, UserAgent: d.UserAgent, GBVersion: d.GBVersion}
	if entry, ok := a.cascade.AllowedDevice(d.ID); ok {
		out.Config = withoutSecrets(entry)
	}
	if !d.LastKeepalive.IsZero() {
		t := d.LastKeepalive
		out.LastKeepalive = &t
	}
	return out
}

// channelCursor keeps device and channel ID apart with a NUL, which no
// SIP user part holds.
func channelCursor(k cascade.ChannelKey) string { return k.DeviceID + "\x00" + k.ID }

func (a *app) listChannels(w http.ResponseWriter, r *http.Request) {
	p, err := parseList(r, true, "device_id", "status", "q", "platform")
	if err != nil {
		badRequest(w, err, "")
		return
	}
	f := cascade.ChannelFilter{DeviceID: p.get("device_id"), Status: p.get("status"), Q: p.get("q"), Platform: p.get("platform")}
	switch strings.ToUpper(f.Status) {
	case "", "ON", "OFF", "VLOST", "DEFECT":
	default:
		badRequest(w, &paramError{"status", "want ON, OFF, VLOST or DEFECT, got " + strconv.Quote(f.Status)}, "")
		return
	}
	if a.cluster != nil && f.Platform == "" {
		all, err := a.nodeChannels(f)
		if err != nil {
			badRequest(w, err, "")
			return
		}
		page, next, more := pageOf(all, channelJSONKey, p.cursor, p.has, p.limit)
		writePage(w, r, page, len(all), next, more)
		return
	}
	page := cascade.Page[cascade.ChannelKey]{Limit: p.limit}
	if p.has {
		dev, id, ok := strings.Cut(p.cursor, "\x00")
		if !ok {
			badRequest(w, &paramError{"cursor", "not a cursor from this list's Link header; start again without it"}, "")
			return
		}
		page.After = &cascade.ChannelKey{DeviceID: dev, ID: id}
	}
	chans, total, next, err := a.cascade.ChannelPage(f, page)
	if err != nil {
		badRequest(w, err, f.Platform)
		return
	}
	out := make([]channelJSON, len(chans))
	for i, c := range chans {
		out[i] = toChannelJSON(c)
	}
	var cursor string
	if next != nil {
		cursor = channelCursor(*next)
	}
	writePage(w, r, out, total, cursor, next != nil)
}

func (a *app) getChannel(w http.ResponseWriter, r *http.Request) {
	p, err := parseList(r, false, "platform")
	if err != nil {
		badRequest(w, err, "")
		return
	}
	id, platform := r.PathValue("id"), p.get("platform")
	c, ok, err := a.cascade.Channel(id, platform)
	switch {
	case err != nil:
		badRequest(w, err, platform)
	case !ok && platform != "":
		http.Error(w, "upper platform "+strconv.Quote(platform)+" sees no channel "+strconv.Quote(id), http.StatusNotFound)
	case !ok:
		http.Error(w, "no device reported a channel "+strconv.Quote(id), http.StatusNotFound)
	default:
		writeJSON(w, toChannelJSON(c))
	}
}

func toChannelJSON(c cascade.ChannelView) channelJSON {
	return channelJSON{ID: c.ID, DeviceID: c.DeviceID, Name: c.Item.Name, Status: c.Status,
		ParentID: c.Item.ParentID, CivilCode: c.Item.CivilCode, BusinessGroupID: c.Item.BusinessGroupID,
		SharedTo: c.SharedTo, LocalID: c.LocalID}
}

// listSessions pages the live sessions by Call-ID. They are few (one per
// relay port pair), so filtering a copy is enough. In a cluster the list is
// the cluster's (see api_sessions.go) unless ?local=true.
func (a *app) listSessions(w http.ResponseWriter, r *http.Request) {
	p, err := parseList(r, true, "device_id", "platform", "q", "local")
	if err != nil {
		badRequest(w, err, "")
		return
	}
	dev, platform, q := p.get("device_id"), p.get("platform"), strings.ToLower(p.get("q"))
	if platform != "" && !a.cascade.HasPlatform(platform) {
		badRequest(w, directory.ErrUnknownPlatform, platform)
		return
	}
	local, err := strconv.ParseBool(cmp.Or(p.get("local"), "false"))
	if err != nil {
		badRequest(w, &paramError{"local", "want true or false, got " + strconv.Quote(p.get("local"))}, "")
		return
	}
	all := a.b2bua.Sessions()
	if a.cluster != nil {
		self := a.cluster.Self().ID
		for i := range all {
			all[i].Node = cmp.Or(all[i].Node, self)
		}
		if !local {
			var skipped []string
			all, skipped = a.clusterSessions(r, all)
			if len(skipped) > 0 {
				w.Header().Set(skippedHeader, strings.Join(skipped, ", "))
			}
		}
	}
	matches := slices.DeleteFunc(all, func(s b2bua.Session) bool {
		return dev != "" && s.DeviceID != dev || platform != "" && s.UpperID != platform ||
			q != "" && !strings.Contains(strings.ToLower(s.CallID+"\x00"+s.ChannelID+"\x00"+s.UpperChannelID), q)
	})
	slices.SortFunc(matches, func(x, y b2bua.Session) int { return strings.Compare(sessionKey(x), sessionKey(y)) })
	page, next, more := pageOf(matches, sessionKey, p.cursor, p.has, p.limit)
	writePage(w, r, page, len(matches), next, more)
}

// sessionKey orders sessions by Call-ID, then node (NUL sorts first).
func sessionKey(s b2bua.Session) string {
	if s.Node == "" {
		return s.CallID
	}
	return s.CallID + "\x00" + s.Node
}
