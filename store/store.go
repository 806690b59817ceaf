// Package store persists gbproxy's registry (devices, channels, upper-platform state)
// in an embedded bbolt file. Writes are write-behind: callers never wait for the
// disk, and a single background goroutine batches them into few bbolt transactions,
// because bbolt has one writer and every commit fsyncs.
package store

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/rs/zerolog"
	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

const (
	metaBucket       = "meta"
	schemaVersionKey = "schema_version"
	// schemaVersion is the layout this code reads and writes; bump it together with a
	// case in migrate when the stored format changes.
	schemaVersion = 1

	lockTimeout = time.Second
	// failureLogInterval limits repeated flush-failure lines while the disk stays full.
	failureLogInterval = 30 * time.Second
)

// ErrClosed is returned by reads after Close.
var ErrClosed = errors.New("store is closed")

// Options tunes write batching. Zero values select the defaults.
type Options struct {
	FlushInterval time.Duration // how long a write may wait to be batched; default 200ms
	MaxBatch      int           // records per bbolt transaction, and pending count that triggers a flush; default 2000
	Logger        zerolog.Logger

	maxFileSize int // tests only: bbolt MaxSize, to simulate a full disk
}

// Stats describes the write-behind queue.
type Stats struct {
	Pending           int // records not yet on disk, including a batch being written or retried
	Flushes           uint64
	LastFlushDuration time.Duration
	LastError         error // error of the last flush; nil once a flush succeeds
}

// Store is safe for concurrent use.
type Store struct {
	path string
	db   *bolt.DB
	opts Options
	log  zerolog.Logger

	flushMu sync.Mutex // serialises flushes; held while writing to disk

	mu                sync.RWMutex
	pending           *layer // operations no flush has picked up yet
	flushing          *layer // operations being written, or kept after a failed write; nil if none
	closed            bool
	flushes           uint64
	lastFlushDuration time.Duration
	lastErr           error

	kick chan struct{} // wakes the flusher early once MaxBatch records are pending
	stop chan struct{}
	done chan struct{}
}

// Open opens or creates the store file at path, creating its directory.
func Open(path string, opts Options) (*Store, error) {
	if opts.FlushInterval <= 0 {
		opts.FlushInterval = 200 * time.Millisecond
	}
	if opts.MaxBatch <= 0 {
		opts.MaxBatch = 2000
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("create store directory for %s: %w; check permissions or choose another store path", path, err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout: lockTimeout,
		// The freelist is rebuilt by scanning the file on open instead of being
		// rewritten on every commit: smaller, faster commits for our constant churn,
		// at the price of a slower open after a crash (cheap for a registry-sized file).
		NoFreelistSync: true,
		// The map freelist stays fast when the file is fragmented by churn.
		FreelistType: bolt.FreelistMapType,
		MaxSize:      opts.maxFileSize,
	})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("store %s is locked by another process; stop the other gbproxy or give this one a different store path", path)
	}
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w; check the file permissions, or move the file aside if it is damaged (gbproxy then starts with an empty registry)", path, err)
	}
	if err := db.Update(func(tx *bolt.Tx) error { return checkSchema(tx, path) }); err != nil {
		_ = db.Close()
		return nil, err
	}
	s := &Store{
		path:    path,
		db:      db,
		opts:    opts,
		log:     opts.Logger.With().Str("store", path).Logger(),
		pending: newLayer(),
		kick:    make(chan struct{}, 1),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
	}
	go s.run()
	return s, nil
}

func checkSchema(tx *bolt.Tx, path string) error {
	meta, err := tx.CreateBucketIfNotExists([]byte(metaBucket))
	if err != nil {
		return fmt.Errorf("store %s: create meta bucket: %w", path, err)
	}
	current := []byte(strconv.Itoa(schemaVersion))
	raw := meta.Get([]byte(schemaVersionKey))
	if raw == nil {
		return meta.Put([]byte(schemaVersionKey), current)
	}
	onDisk, err := strconv.Atoi(string(raw))
	if err != nil {
		return fmt.Errorf("store %s: unreadable schema version %q; it is not a gbproxy store or is damaged, move it aside to start with an empty registry", path, raw)
	}
	switch {
	case onDisk == schemaVersion:
		return nil
	case onDisk > schemaVersion:
		return fmt.Errorf("store %s has schema version %d but this gbproxy supports up to %d; run the newer gbproxy that wrote it, or move the file aside to start with an empty registry", path, onDisk, schemaVersion)
	}
	if err := migrate(tx, onDisk); err != nil {
		return fmt.Errorf("store %s: migrate schema version %d to %d: %w; move the file aside to start with an empty registry", path, onDisk, schemaVersion, err)
	}
	return meta.Put([]byte(schemaVersionKey), current)
}

// migrate upgrades the stored layout one version at a time, inside the open transaction.
func migrate(_ *bolt.Tx, from int) error {
	for v := from; v < schemaVersion; v++ { //nolint:staticcheck // SA4008: constant until schema version 2 adds a case
		switch v {
		// case 1: convert version 1 to 2 here once version 2 exists.
		default:
			return fmt.Errorf("no migration from schema version %d", v)
		}
	}
	return nil
}

// Put stores v (JSON-encoded now) under bucket/key. It returns at once; the write
// reaches disk with the next flush. The last Put or Delete of a key wins.
func (s *Store) Put(bucket, key string, v any) {
	value, err := json.Marshal(v)
	if err != nil {
		s.log.Error().Err(err).Str("bucket", bucket).Str("key", key).
			Msg("store: record cannot be encoded as JSON and was not saved; this is a gbproxy bug, please report it")
		return
	}
	s.enqueue(op{bucket: bucket, key: key, value: value})
}

// Delete removes bucket/key with the next flush.
func (s *Store) Delete(bucket, key string) {
	s.enqueue(op{bucket: bucket, key: key})
}

// DeletePrefix removes every key of bucket that starts with prefix (for example all
// "deviceID/" channels). Puts made after it are kept, even under the same prefix.
func (s *Store) DeletePrefix(bucket, prefix string) {
	s.enqueue(op{bucket: bucket, key: prefix, prefix: true})
}

func (s *Store) enqueue(o op) {
	if err := o.validate(); err != nil {
		s.log.Error().Err(err).Str("op", o.kind()).Str("bucket", o.bucket).Str("key", o.key).
			Msg("store: write rejected and not saved; this is a gbproxy bug, please report it")
		return
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		s.log.Error().Str("op", o.kind()).Str("bucket", o.bucket).Str("key", o.key).
			Msg("store: write after Close ignored and not saved; expected only while gbproxy shuts down")
		return
	}
	if o.prefix {
		s.pending.deletePrefix(o.bucket, o.key)
	} else {
		s.pending.set(o.bucket, o.key, o.value)
	}
	full := s.pending.size >= s.opts.MaxBatch
	s.mu.Unlock()
	if full {
		select {
		case s.kick <- struct{}{}:
		default: // a wake-up is already queued
		}
	}
}

func (o op) validate() error {
	switch {
	case o.bucket == "":
		return errors.New("empty bucket name")
	case o.bucket == metaBucket:
		return fmt.Errorf("bucket %q is reserved for the store's own metadata", metaBucket)
	case len(o.bucket) > bolt.MaxKeySize:
		return fmt.Errorf("bucket name longer than %d bytes", bolt.MaxKeySize)
	case o.key == "" && !o.prefix:
		return errors.New("empty key")
	case len(o.key) > bolt.MaxKeySize:
		return fmt.Errorf("key longer than %d bytes", bolt.MaxKeySize)
	case len(o.value) > bolt.MaxValueSize:
		return fmt.Errorf("value longer than %d bytes", bolt.MaxValueSize)
	}
	return nil
}

func (o op) kind() string {
	switch {
	case o.prefix:
		return "DeletePrefix"
	case o.value == nil:
		return "Delete"
	}
	return "Put"
}

// Get decodes the value of bucket/key into v. Writes not yet flushed are seen.
func (s *Store) Get(bucket, key string, v any) (bool, error) {
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return false, ErrClosed
	}
	value, decided := s.pending.lookup(bucket, key)
	if !decided && s.flushing != nil {
		value, decided = s.flushing.lookup(bucket, key)
	}
	s.mu.RUnlock()
	if decided {
		if value == nil {
			return false, nil
		}
		return true, decode(bucket, key, value, v)
	}
	var found bool
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte(bucket))
		if b == nil {
			return nil
		}
		value := b.Get([]byte(key))
		if value == nil {
			return nil
		}
		found = true
		return decode(bucket, key, value, v)
	})
	if errors.Is(err, bolterrors.ErrDatabaseNotOpen) {
		return false, ErrClosed
	}
	return found, err
}

func decode(bucket, key string, value []byte, v any) error {
	if err := json.Unmarshal(value, v); err != nil {
		return fmt.Errorf("store: decode %s/%s: %w", bucket, key, err)
	}
	return nil
}

// ForEach calls fn for every key of bucket in key order, merging writes not yet
// flushed over the disk contents; an error from fn stops the walk and is returned.
// Writes made before ForEach are all seen; concurrent ones may or may not be.
// raw is valid only during the call. fn may call Put, Delete and Get, but not
// Flush or Close: bbolt cannot grow the file while this read is open.
func (s *Store) ForEach(bucket string, fn func(key string, raw []byte) error) error {
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return ErrClosed
	}
	overlay := newLayer()
	for _, l := range []*layer{s.flushing, s.pending} { // oldest first
		if l != nil && l.buckets[bucket] != nil {
			overlay.merge(&layer{buckets: map[string]*bucketOps{bucket: l.buckets[bucket]}})
		}
	}
	s.mu.RUnlock()

	pending := overlay.bucket(bucket)
	var puts []string
	for key, value := range pending.entries {
		if value != nil {
			puts = append(puts, key)
		}
	}
	slices.Sort(puts)

	err := s.db.View(func(tx *bolt.Tx) error {
		if b := tx.Bucket([]byte(bucket)); b != nil {
			c := b.Cursor()
			for k, v := c.First(); k != nil; k, v = c.Next() {
				key := string(k)
				for len(puts) > 0 && puts[0] < key {
					if err := fn(puts[0], pending.entries[puts[0]]); err != nil {
						return err
					}
					puts = puts[1:]
				}
				if _, decided := pending.lookup(key); decided {
					continue // a pending put with this key follows; a pending delete hides it
				}
				if err := fn(key, v); err != nil {
					return err
				}
			}
		}
		for _, key := range puts {
			if err := fn(key, pending.entries[key]); err != nil {
				return err
			}
		}
		return nil
	})
	if errors.Is(err, bolterrors.ErrDatabaseNotOpen) {
		return ErrClosed
	}
	return err
}

// Flush synchronously writes everything pending.
func (s *Store) Flush() error {
	s.mu.RLock()
	closed := s.closed
	s.mu.RUnlock()
	if closed {
		return ErrClosed
	}
	return s.flush()
}

// Backup writes a consistent copy of the store file to w while the store
// stays in use: everything written before the call is flushed first, then
// one bbolt read transaction copies the file. The copy is a store file that
// Open accepts. Writers keep going during the copy, but bbolt cannot grow the
// file until it ends, so give w a deadline.
func (s *Store) Backup(w io.Writer) (int64, error) {
	if err := s.Flush(); err != nil {
		return 0, fmt.Errorf("backup of %s: flush pending records first: %w", s.path, err)
	}
	var n int64
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		n, err = tx.WriteTo(w)
		return err
	})
	if errors.Is(err, bolterrors.ErrDatabaseNotOpen) {
		return n, ErrClosed
	}
	if err != nil {
		return n, fmt.Errorf("backup of %s after %d bytes: %w", s.path, n, err)
	}
	return n, nil
}

// Close flushes and closes the file. Calling it again does nothing.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true // from here on writes are refused, so the final flush sees them all
	s.mu.Unlock()
	close(s.stop)
	<-s.done
	flushErr := s.flush()
	if flushErr != nil {
		flushErr = fmt.Errorf("%w; %d records written since the last successful flush are lost", flushErr, s.Stats().Pending)
	}
	if err := s.db.Close(); err != nil {
		return errors.Join(flushErr, fmt.Errorf("close store %s: %w", s.path, err))
	}
	return flushErr
}

// Stats reports the state of the write-behind queue.
func (s *Store) Stats() Stats {
	s.mu.RLock()
	defer s.mu.RUnlock()
	pending := s.pending.size
	if s.flushing != nil {
		pending += s.flushing.size
	}
	return Stats{Pending: pending, Flushes: s.flushes, LastFlushDuration: s.lastFlushDuration, LastError: s.lastErr}
}

func (s *Store) run() {
	defer close(s.done)
	ticker := time.NewTicker(s.opts.FlushInterval)
	defer ticker.Stop()
	kick := s.kick
	var failingSince, lastLogged time.Time
	for {
		select {
		case <-s.stop:
			return
		case <-ticker.C:
		case <-kick:
		}
		err := s.flush()
		now := time.Now()
		switch {
		case err != nil && (failingSince.IsZero() || now.Sub(lastLogged) >= failureLogInterval):
			s.log.Error().Err(err).Int("pending", s.Stats().Pending).
				Msgf("store: flush failed; records are kept in memory and retried every %s, free disk space or fix permissions on the store directory (they are lost if gbproxy stops first)", s.opts.FlushInterval)
			lastLogged = now
		case err == nil && !failingSince.IsZero():
			s.log.Info().Dur("failed_for", now.Sub(failingSince)).Msg("store: flush recovered; all pending records are on disk")
		}
		if err == nil {
			failingSince = time.Time{}
			kick = s.kick
		} else {
			if failingSince.IsZero() {
				failingSince = now
			}
			kick = nil // retrying on every wake-up would spin against a full disk; wait for the tick
		}
	}
}

// flush writes the pending operations. On failure they stay queued, and operations
// made meanwhile are merged on top, so the next flush retries them in order.
func (s *Store) flush() error {
	s.flushMu.Lock()
	defer s.flushMu.Unlock()

	s.mu.Lock()
	if s.flushing == nil {
		s.flushing = s.pending
	} else {
		s.flushing.merge(s.pending)
	}
	s.pending = newLayer()
	batch := s.flushing
	s.mu.Unlock()

	if batch.size == 0 {
		s.mu.Lock()
		s.flushing = nil
		s.mu.Unlock()
		return nil
	}
	start := time.Now()
	err := s.write(batch.ops())
	elapsed := time.Since(start)

	s.mu.Lock()
	defer s.mu.Unlock()
	s.lastFlushDuration = elapsed
	s.lastErr = err
	if err == nil {
		s.flushing = nil
		s.flushes++
	}
	return err
}

// write applies ops in transactions of at most MaxBatch operations. Rewriting ops
// that an earlier, failed attempt partly committed yields the same result, so a
// failed write can simply be retried from the start.
func (s *Store) write(ops []op) error {
	for start := 0; start < len(ops); start += s.opts.MaxBatch {
		chunk := ops[start:min(start+s.opts.MaxBatch, len(ops))]
		if err := s.db.Update(func(tx *bolt.Tx) error { return apply(tx, chunk) }); err != nil {
			return fmt.Errorf("write %d records to %s: %w", len(ops)-start, s.path, err)
		}
	}
	return nil
}

func apply(tx *bolt.Tx, ops []op) error {
	var (
		name   string
		bucket *bolt.Bucket
	)
	for _, o := range ops {
		if o.bucket != name || bucket == nil {
			name = o.bucket
			bucket = tx.Bucket([]byte(name))
		}
		if o.value != nil && bucket == nil {
			var err error
			if bucket, err = tx.CreateBucketIfNotExists([]byte(name)); err != nil {
				return fmt.Errorf("create bucket %s: %w", name, err)
			}
		}
		var err error
		switch {
		case bucket == nil: // nothing stored in this bucket to delete
		case o.prefix:
			err = deletePrefix(bucket, o.key)
		case o.value == nil:
			err = bucket.Delete([]byte(o.key))
		default:
			err = bucket.Put([]byte(o.key), o.value)
		}
		if err != nil {
			return fmt.Errorf("%s %s/%s: %w", o.kind(), name, o.key, err)
		}
	}
	return nil
}

func deletePrefix(b *bolt.Bucket, prefix string) error {
	// Keys are collected first: a bbolt cursor skips entries when deleting as it walks.
	var keys [][]byte
	c := b.Cursor()
	for k, _ := c.Seek([]byte(prefix)); k != nil && bytes.HasPrefix(k, []byte(prefix)); k, _ = c.Next() {
		keys = append(keys, slices.Clone(k))
	}
	for _, k := range keys {
		if err := b.Delete(k); err != nil {
			return err
		}
	}
	return nil
}
