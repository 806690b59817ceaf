package main

import (
	"net/http"
	"time"
)

// backupWriteTimeout bounds a backup download: bbolt cannot grow the store
// file while the copy's read transaction is open, so a stalled client must
// not hold it for ever.
const backupWriteTimeout = 5 * time.Minute

// storeBackup answers GET /api/v1/store/backup with a consistent copy of the
// store file, taken while the proxy runs (restore: stop gbproxy, put the copy
// at store.path, start it).
func (a *app) storeBackup(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	if err := http.NewResponseController(w).SetWriteDeadline(start.Add(backupWriteTimeout)); err != nil {
		a.log.Warn().Err(err).Msg("store backup: cannot bound the download time")
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Disposition", `attachment; filename="gbproxy-`+start.UTC().Format("20060102T150405Z")+`.db"`)
	n, err := a.store.Backup(w)
	log := a.log.With().Str("remote", r.RemoteAddr).Int64("bytes", n).Str("took", time.Since(start).String()).Logger()
	switch {
	case err != nil && n == 0:
		log.Error().Err(err).Msg("store backup failed")
		w.Header().Del("Content-Disposition")
		http.Error(w, "store backup failed: "+err.Error(), http.StatusInternalServerError)
	case err != nil:
		// The status line is gone: the client sees a short body.
		log.Error().Err(err).Msg("store backup broke off; the client got an incomplete copy")
	default:
		log.Info().Msg("store backup sent")
	}
}
